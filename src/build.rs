//! `build`: runs each component's `[component.<id>.build] command` in its `workdir`
//! (relative to the manifest), as `spin build` does, with a line per component and the
//! failing command's output on error.

use std::process::Stdio;

use anyhow::{Context, bail};

use spindapr_manifest::App;

/// Builds the named components (all when `only` is empty).
pub fn build(app: &App, only: &[String], quiet: bool) -> anyhow::Result<()> {
    for id in only {
        if !app.components.contains_key(id) {
            bail!("no component `{id}` in {}", app.manifest_path.display());
        }
    }
    let mut built = 0;
    for (id, c) in &app.components {
        if !only.is_empty() && !only.contains(id) {
            continue;
        }
        let Some(build) = &c.build else {
            if !quiet {
                println!("{id}: no build command; skipping");
            }
            continue;
        };
        let workdir = match &build.workdir {
            Some(w) => app.base_dir.join(w),
            None => app.base_dir.clone(),
        };
        for command in build.command.iter() {
            if !quiet {
                println!("Building component {id} with `{command}`");
            }
            let started = std::time::Instant::now();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(&workdir)
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("component `{id}`: cannot run `{command}` in {}", workdir.display()))?;
            if !out.status.success() {
                bail!(
                    "component `{id}`: build command `{command}` failed ({}) in {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    out.status,
                    workdir.display(),
                    String::from_utf8_lossy(&out.stdout).trim_end(),
                    String::from_utf8_lossy(&out.stderr).trim_end()
                );
            }
            if !quiet {
                println!("  done in {:.1}s", started.elapsed().as_secs_f64());
            }
        }
        built += 1;
    }
    if !quiet {
        println!("Finished building {built} component(s)");
    }
    Ok(())
}
