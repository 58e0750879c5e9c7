//! `watch`: builds the app and serves it with `up`, then rebuilds and restarts on change,
//! as `spin watch`: a file matching a component's `[component.<id>.build] watch` globs
//! (taken from its `workdir`) rebuilds that component and restarts serving; a change to
//! spin.toml rebuilds everything and re-reads the globs; a change to a component's .wasm
//! (with `--skip-build`, the only thing watched besides spin.toml) restarts serving.
//! Changes are gathered over the debounce window first; builds and `up` run as child
//! processes of this binary, so their output and errors read as usual.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::Watcher as _;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use spindapr_manifest as manifest;

/// What `watch` was asked to do.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The app's spin.toml, or a folder holding one.
    pub from: PathBuf,
    /// Clear the screen before each build or restart.
    pub clear: bool,
    /// How long to gather changes before acting on them.
    pub debounce: Duration,
    /// Only serve, restarting when a component's .wasm changes.
    pub skip_build: bool,
    /// Arguments passed through to `up`.
    pub up_args: Vec<String>,
}

/// What the watch looks for, read from the manifest.
struct Watched {
    manifest: PathBuf,
    /// Each component's build globs (absent when it has none or builds are skipped).
    sources: Vec<(String, GlobSet)>,
    /// The components' .wasm files.
    artifacts: Vec<PathBuf>,
}

impl Watched {
    fn read(manifest_path: &Path, skip_build: bool) -> anyhow::Result<Self> {
        let app = manifest::load(manifest_path)?;
        let mut sources = Vec::new();
        for (id, c) in &app.components {
            let Some(build) = c.build.as_ref().filter(|_| !skip_build) else { continue };
            if build.watch.is_empty() {
                eprintln!("component `{id}` has no `watch` globs in [component.{id}.build]; changes to its sources are not watched");
                continue;
            }
            let workdir = build.workdir.as_ref().map(|w| app.base_dir.join(w)).unwrap_or_else(|| app.base_dir.clone());
            let mut set = GlobSetBuilder::new();
            for w in &build.watch {
                // Globs are matched against absolute paths, so anchor each at the workdir.
                let pattern = if Path::new(w).is_absolute() { w.clone() } else { format!("{}/{w}", workdir.display()) };
                set.add(Glob::new(&pattern).with_context(|| format!("[component.{id}.build] watch: {w:?} is not a glob"))?);
            }
            sources.push((id.clone(), set.build().with_context(|| format!("[component.{id}.build] watch"))?));
        }
        let artifacts = app.components.values().map(|c| lexical(&c.source)).collect();
        Ok(Self { manifest: app.manifest_path.clone(), sources, artifacts })
    }
}

/// What a batch of changes calls for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// spin.toml changed: re-read it, build everything.
    manifest: bool,
    /// Components whose sources changed.
    build: BTreeSet<String>,
    /// A .wasm changed.
    restart: bool,
}

impl Watched {
    fn plan(&self, paths: &[PathBuf]) -> Plan {
        let mut plan = Plan::default();
        for p in paths {
            if p == &self.manifest {
                plan.manifest = true;
            }
            for (id, globs) in &self.sources {
                if globs.is_match(p) {
                    plan.build.insert(id.clone());
                }
            }
            if self.artifacts.iter().any(|a| a == p) {
                plan.restart = true;
            }
        }
        plan
    }
}

/// `p` with `.` and `..` resolved by its components (the file may not exist yet), so a
/// source such as `../target/x.wasm` matches the paths the watcher reports.
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let p = std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))?;
    Ok(p.canonicalize().unwrap_or(p))
}

/// Runs `spindapr build` for the app (only `components` when not empty); whether it succeeded.
async fn build(exe: &Path, manifest: &Path, components: &BTreeSet<String>) -> anyhow::Result<bool> {
    let mut cmd = Command::new(exe);
    cmd.arg("build").arg("-f").arg(manifest);
    for c in components {
        cmd.arg("-c").arg(c);
    }
    let status: ExitStatus = cmd.status().await.context("cannot run `spindapr build`")?;
    if !status.success() {
        eprintln!("build failed ({status}); fix the error and save again: serving continues with the last build");
    }
    Ok(status.success())
}

fn start_up(exe: &Path, manifest: &Path, args: &[String]) -> anyhow::Result<Child> {
    Command::new(exe).arg("up").arg("-f").arg(manifest).args(args).kill_on_drop(true).spawn().context("cannot run `spindapr up`")
}

/// Stops `up` as Ctrl+C would (SIGTERM, so it drains), killing it after 10 s.
async fn stop_up(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// After a build: lets its own writes arrive, drops those (the .wasm files: the restart
/// that follows is for them) and keeps every other change — a source saved while the
/// build ran is acted on next.
async fn settle(rx: &mut mpsc::UnboundedReceiver<PathBuf>, debounce: Duration, watched: &Watched) -> Vec<PathBuf> {
    tokio::time::sleep(debounce).await;
    let mut kept = Vec::new();
    while let Ok(p) = rx.try_recv() {
        if !watched.artifacts.contains(&p) {
            kept.push(p);
        }
    }
    kept
}

fn clear_screen(on: bool) {
    if on {
        print!("\x1b[2J\x1b[H");
    }
}

/// Watches until SIGINT/SIGTERM.
pub async fn run(o: WatchOptions) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let manifest_path = absolute(&manifest::resolve_manifest_path(&o.from))?;
    let base = manifest_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let mut watched = Watched::read(&manifest_path, o.skip_build)?;

    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    })
    .context("cannot start watching files")?;
    watcher.watch(&base, notify::RecursiveMode::Recursive).with_context(|| format!("cannot watch {}", base.display()))?;
    // Artifacts may live outside the app folder (a shared target dir).
    for a in &watched.artifacts {
        if let Some(dir) = a.parent().filter(|d| !d.starts_with(&base))
            && let Err(e) = std::fs::create_dir_all(dir)
                .map_err(notify::Error::io)
                .and_then(|()| watcher.watch(dir, notify::RecursiveMode::NonRecursive))
        {
            eprintln!("cannot watch {}: {e}; changes to its .wasm files restart nothing", dir.display());
        }
    }

    let shutdown = crate::sidecar::shutdown_signal()?;
    tokio::pin!(shutdown);
    clear_screen(o.clear);
    // As `spin watch`: `up` starts once a build has succeeded (with --skip-build, at once).
    let mut built_once = o.skip_build || build(&exe, &manifest_path, &BTreeSet::new()).await?;
    let mut carried = if o.skip_build { Vec::new() } else { settle(&mut rx, o.debounce, &watched).await };
    let mut up = if built_once { Some(start_up(&exe, &manifest_path, &o.up_args)?) } else { None };
    loop {
        // Wait for a change (or take those saved during the last build), gather the rest
        // of the burst, then act once.
        let first = if !carried.is_empty() {
            carried.remove(0)
        } else {
            tokio::select! {
            _ = &mut shutdown => break,
            p = rx.recv() => match p { Some(p) => p, None => break },
            status = async { match up.as_mut() { Some(c) => c.wait().await, None => std::future::pending().await } } => {
                eprintln!("`up` exited ({}); waiting for a change to start it again", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
                up = None;
                continue;
            }
            }
        };
        let mut paths = vec![first];
        paths.append(&mut carried);
        let deadline = tokio::time::Instant::now() + o.debounce;
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            paths.push(p);
        }
        let plan = watched.plan(&paths);
        // A change while `up` is not running (a failed first build, or it exited) starts it.
        if !plan.manifest && plan.build.is_empty() && !plan.restart && (up.is_some() || !built_once) {
            continue;
        }
        clear_screen(o.clear);
        if plan.manifest {
            match Watched::read(&manifest_path, o.skip_build) {
                Ok(w) => watched = w,
                Err(e) => {
                    eprintln!("{} changed but cannot be read: {e:#}\nserving continues with the last version", manifest_path.display());
                    continue;
                }
            }
        }
        let built = if o.skip_build {
            true
        } else if plan.manifest {
            build(&exe, &manifest_path, &BTreeSet::new()).await?
        } else if !plan.build.is_empty() {
            build(&exe, &manifest_path, &plan.build).await?
        } else {
            true
        };
        // The build's own writes (the .wasm) are what this restart is for.
        if !o.skip_build && (plan.manifest || !plan.build.is_empty()) {
            carried = settle(&mut rx, o.debounce, &watched).await;
        }
        if !built {
            continue;
        }
        built_once = true;
        if let Some(mut child) = up.take() {
            stop_up(&mut child).await;
        }
        up = Some(start_up(&exe, &manifest_path, &o.up_args)?);
    }
    if let Some(mut child) = up.take() {
        stop_up(&mut child).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_map_to_builds_restarts_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::write(
            base.join("spin.toml"),
            r#"spin_manifest_version = 2
[application]
name = "w"
[[trigger.http]]
route = "/a"
component = "a"
[[trigger.http]]
route = "/b"
component = "b"
[component.a]
source = "a/a.wasm"
[component.a.build]
command = "true"
workdir = "a"
watch = ["src/**/*.rs", "Cargo.toml"]
[component.b]
source = "a/../b.wasm"
[component.b.build]
command = "true"
"#,
        )
        .unwrap();
        let w = Watched::read(&base.join("spin.toml"), false).unwrap();
        let plan = w.plan(&[base.join("a/src/lib.rs"), base.join("a/src/deep/x.rs")]);
        assert_eq!(plan, Plan { build: ["a".to_string()].into(), ..Plan::default() });
        assert_eq!(w.plan(&[base.join("src/lib.rs")]), Plan::default(), "globs are taken from the workdir");
        assert!(w.plan(&[base.join("spin.toml")]).manifest);
        assert!(w.plan(&[base.join("b.wasm")]).restart);
        assert_eq!(lexical(Path::new("/a/b/../c/./d.wasm")), Path::new("/a/c/d.wasm"));
        let skip = Watched::read(&base.join("spin.toml"), true).unwrap();
        assert_eq!(skip.plan(&[base.join("a/src/lib.rs")]), Plan::default(), "--skip-build watches no sources");
    }
}
