//! Property tests over every parser that reads outside input (#11): spin.toml (and its
//! allowed hosts, routes and variable templates), runtime-config.toml, the Dapr resource
//! YAML, Go durations and daprd's quantities. Inputs are the project's own files mutated
//! (lines dropped, repeated, cut, bytes replaced with structural characters) and
//! arbitrary text; each parser must answer Ok or an error that says something, never
//! panic. The cases come from a fixed seed, so a failure reproduces exactly; the
//! sidecar's HTTP API and the guests' request bodies are covered by tests/hostile.rs,
//! the CloudEvent and subscription parsers by the `spindapr-dapr` crate's own, and the
//! guests' by todo-domain's.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// `cases` generated from a fixed seed, nothing persisted.
fn seeded(cases: u32) -> Config {
    Config { cases, rng_seed: RngSeed::Fixed(0x5eed_0011), failure_persistence: None, ..Config::default() }
}

/// One edit of a text: drop, repeat or cut a line, or overwrite a few bytes with
/// characters that matter to TOML and YAML.
#[derive(Debug, Clone)]
enum Edit {
    DropLine(usize),
    RepeatLine(usize),
    Truncate(usize),
    Overwrite(usize, String),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        any::<usize>().prop_map(Edit::DropLine),
        any::<usize>().prop_map(Edit::RepeatLine),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), "[\\[\\]{}=\"':,.#\\- \\n\\t0-9a-z_|>&*!%@`~]{1,6}").prop_map(|(at, s)| Edit::Overwrite(at, s)),
    ];
    proptest::collection::vec(edit, 1..5)
}

fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            Edit::DropLine(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Edit::RepeatLine(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::Truncate(i) if !lines.is_empty() => {
                let l = &mut lines[i % n];
                let cut = (i / n) % (l.len() + 1);
                let cut = (0..=cut).rev().find(|c| l.is_char_boundary(*c)).unwrap_or(0);
                l.truncate(cut);
            }
            Edit::Overwrite(i, s) if !lines.is_empty() => {
                let l = &mut lines[i % n];
                let at = (i / n) % (l.len() + 1);
                let at = (0..=at).rev().find(|c| l.is_char_boundary(*c)).unwrap_or(0);
                let end = (at + s.len()).min(l.len());
                let end = (end..=l.len()).find(|c| l.is_char_boundary(*c)).unwrap_or(l.len());
                l.replace_range(at..end, s);
            }
            _ => {}
        }
    }
    lines.join("\n")
}

fn repo_file(rel: &str) -> String {
    std::fs::read_to_string(common::repo_root().join(rel)).unwrap()
}

proptest! {
    #![proptest_config(seeded(2500))]
    #[test]
    fn spin_toml_mutations_parse_or_say_why(e in edits()) {
        let text = mutate(&repo_file("spin.toml"), &e);
        if let Err(err) = spindapr_manifest::parse(Path::new("/app/spin.toml"), &text) {
            prop_assert!(!err.to_string().is_empty());
        }
    }
}

proptest! {
    #![proptest_config(seeded(1000))]
    #[test]
    fn spin_toml_from_arbitrary_text(text in "\\PC{0,200}") {
        let _ = spindapr_manifest::parse(Path::new("/app/spin.toml"), &text);
    }

    #[test]
    fn runtime_config_mutations_parse_or_say_why(e in edits()) {
        let text = mutate(&repo_file("runtime-config/runtime-config.toml"), &e);
        if let Err(err) = spindapr_host::runtime_config::RuntimeConfig::parse(Path::new("/app/rc.toml"), &text) {
            prop_assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn allowed_hosts_routes_and_templates(s in "\\PC{0,40}") {
        let _ = spindapr_manifest::allowed_hosts::AllowedHost::parse(&s);
        let _ = spindapr_manifest::routes::parse_route(&s);
        let _ = spindapr_manifest::template::Template::parse(&s);
    }

    #[test]
    fn go_durations_and_quantities(s in "[-+0-9.a-zA-Zµ]{0,16}") {
        let _ = spindapr_dapr_components::parse_go_duration(&s);
        let _ = spindapr_dapr::parse_quantity(&s);
    }
}

proptest! {
    #![proptest_config(seeded(1500))]
    #[test]
    fn dapr_resource_yaml_mutations_load_or_say_why(
        which in 0usize..3,
        e in edits(),
    ) {
        let file = ["runtime-config/dapr/statestore.yaml", "runtime-config/dapr/pubsub.yaml", "runtime-config/dapr/resiliency.yaml"][which];
        let text = mutate(&repo_file(file), &e);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.yaml"), &text).unwrap();
        if let Err(err) = spindapr_dapr::resources::load(&[dir.path().to_path_buf()], "app") {
            prop_assert!(!err.to_string().is_empty());
        }
    }
}
