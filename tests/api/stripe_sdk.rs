//! The official Stripe Python SDK (`tests/sdk/`, pinned in its requirements.txt) runs the
//! flows topupd relies on against the stub provider, as an integrator's code would against
//! Stripe's test mode. `TOPUPD_TEST_STRIPE_PYTHON` names a Python with it installed; CI
//! sets it, and without it (outside CI) the test says so and does nothing.

use crate::helpers::{TestApp, backends};

#[tokio::test]
async fn the_official_stripe_python_sdk_runs_its_flows_against_the_stub() {
    let Some(python) = crate::helpers::sdk_python() else {
        return;
    };
    let app = TestApp::spawn(backends()[0]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/stripe_python.py");
    let ran = tokio::process::Command::new(python)
        .arg(script)
        .arg(app.stub.base_url())
        .output()
        .await
        .expect("python runs");
    assert!(
        ran.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    app.stop().await;
}
