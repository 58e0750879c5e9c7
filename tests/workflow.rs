//! The CI/CD workflow is valid YAML and names only what exists here: the scripts and
//! folders its steps use, the subcommands of this binary, and the jobs it depends on.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::repo_root;

#[test]
fn workflow_is_valid_and_names_only_what_exists() {
    let text = std::fs::read_to_string(repo_root().join(".github/workflows/ci.yaml")).unwrap();
    let wf: serde_norway::Value = serde_norway::from_str(&text).expect("the workflow is valid YAML");
    let jobs = wf["jobs"].as_mapping().expect("jobs");
    let names: Vec<&str> = jobs.keys().filter_map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["test", "package", "push", "deploy"]);
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_spindapr")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    for (name, job) in jobs {
        let name = name.as_str().unwrap();
        if let Some(needs) = job.get("needs").and_then(|n| n.as_str()) {
            assert!(names.contains(&needs), "{name} needs unknown job {needs}");
        }
        for step in job["steps"].as_sequence().expect("steps") {
            assert!(step.get("uses").is_some() || step.get("run").is_some(), "{name}: a step must use an action or run a command");
            let Some(run) = step.get("run").and_then(|r| r.as_str()) else { continue };
            for word in run.split_whitespace().map(|w| w.trim_matches(|c| c == '"' || c == '\'')) {
                // Paths into the repository must exist.
                let path = word.split("${").next().unwrap_or(word).trim_end_matches('/');
                if path.starts_with(".ci/") || path.starts_with("deploy/") {
                    assert!(repo_root().join(path).exists(), "{name}: `{word}` does not exist");
                }
            }
            // `cargo run ... -- <subcommand>` names a subcommand of this binary.
            if let Some(rest) = run.split("cargo run --release -- ").nth(1) {
                let sub = rest.split_whitespace().next().unwrap();
                assert!(help.lines().any(|l| l.trim_start().starts_with(sub)), "{name}: spindapr has no `{sub}` subcommand");
            }
        }
    }
    // The deploy job applies an overlay that exists.
    let overlay = jobs.get("deploy").and_then(|j| j["env"]["OVERLAY"].as_str()).unwrap();
    assert!(repo_root().join("deploy/overlays").join(overlay).join("kustomization.yaml").exists());
    // The test job runs the README's test command through .ci/run.
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).unwrap();
    let [run, test] = readme_commands();
    assert!(run.starts_with("cargo run --release -- up"), "README's first command serves the app: {run}");
    assert!(ci.lines().any(|l| l.trim() == test), ".ci/run must call README's test command `{test}`");
}

/// The two commands of README's "Two commands" section, in order.
fn readme_commands() -> [String; 2] {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme.split("## Two commands").nth(1).expect("README has a Two commands section");
    let block = section.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("a sh code block");
    let commands: Vec<String> = block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    assert_eq!(commands.len(), 2, "exactly two commands: {commands:?}");
    [commands[0].clone(), commands[1].clone()]
}
