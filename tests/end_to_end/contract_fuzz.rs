//! The contract fuzzer, as CI runs it: tools/fuzz.py drives schemathesis against the real
//! binary with a key of every role, a bounded number of generated requests per operation.
//! The first run installs the pinned schemathesis from PyPI into target/fuzz-venv.

use std::process::Command;

use eventstore::testing::TestDatabase;

/// Generated requests per operation and phase: enough to reach every operation's edge
/// cases in about two minutes; `tools/fuzz.py --examples 200` digs deeper.
const EXAMPLES: &str = "10";

#[test]
fn schemathesis_finds_no_problem_as_any_role() {
    let db = TestDatabase::reserve();
    let status = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/fuzz.py"))
        .args(["--crier", env!("CARGO_BIN_EXE_crier")])
        .args(["--examples", EXAMPLES, "--database-url", &db.url])
        .status()
        .expect("python3 runs tools/fuzz.py");
    assert!(
        status.success(),
        "schemathesis found problems (its report is above, and in target/fuzz/<role>/)"
    );
}
