//! Runs the guest crates' native unit tests (validation, event building, the
//! subscriber's decisions, the Dapr client's requests) as part of `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

#[test]
fn guest_logic_unit_tests_pass_natively() {
    let host =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())).arg("-vV").output().expect("rustc -vV");
    let host =
        String::from_utf8_lossy(&host.stdout).lines().find_map(|l| l.strip_prefix("host: ").map(str::to_owned)).expect("host triple");
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--target", &host, "-p", "dapr-http", "-p", "todo-domain"])
        .current_dir(common::repo_root().join("components"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "guest unit tests failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let passed: usize =
        stdout.lines().filter_map(|l| l.strip_prefix("test result: ok. ")).filter_map(|l| l.split(' ').next()?.parse::<usize>().ok()).sum();
    assert!(passed >= 10, "expected the guest unit tests to run, saw {passed}:\n{stdout}");
}
