//! The `larder` binary as users run it: validate, serve with SIGTERM, the
//! quickstart, and configuration errors.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn larder() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_larder"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn wait_ready(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = block_on(reqwest::get(format!("http://127.0.0.1:{port}/ready")));
        if ready.is_ok_and(|r| r.status() == 200) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("larder exited early: {status}");
        }
        assert!(Instant::now() < deadline, "larder did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn post(port: u16, body: &str) -> serde_json::Value {
    block_on(async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/get-online-features"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "larder did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn validate_accepts_good_and_names_bad_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, common::FIXTURE_DEFINITIONS).unwrap();
    let out = larder().arg("validate").arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        common::FIXTURE_DEFINITIONS
            .replace("entities: [driver, rider]", "entities: [driver, ridr]"),
    )
    .unwrap();
    let out = larder().arg("validate").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml")
            && err.contains("driver_rider_fv")
            && err.contains("spec.entities[1]"),
        "{err}"
    );
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let out = larder()
        .args(["serve", "-d", "nowhere"])
        .env("LARDER__SERVE__MAX_ENTITY_ROWS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serve.max_entity_rows"), "{err}");
}

#[test]
fn serve_drains_and_exits_cleanly_on_sigterm() {
    let redis = common::RedisServer::start();
    common::load_golden(&mut redis.conn());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("defs.yaml"), common::FIXTURE_DEFINITIONS).unwrap();
    let port = common::free_port();
    let mut child = larder()
        .arg("serve")
        .arg("-d")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("LARDER__ONLINE_STORE__TYPE", "redis")
        .env("LARDER__ONLINE_STORE__REDIS__URL", redis.url())
        .env("LARDER__SERVE__DEFAULT_NAMESPACE", "kubeflow-alice")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);
    let body = post(
        port,
        r#"{"features": ["driver_daily_stats_fv:city"], "entities": {"driver_id": [1002]}}"#,
    );
    assert_eq!(body["results"][1]["values"][0], "Patras", "{body}");

    // SIGHUP reloads the definitions; a broken set keeps the served one.
    let extra = r#"{"features": ["extra_fv:x"], "entities": {"driver_id": [1]}}"#;
    assert_eq!(post(port, extra)["error"]["code"], "not_found");
    let hangup = |child: &Child| {
        let ok = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    std::fs::write(dir.path().join("extra.yaml"), "apiVersion: nope\n").unwrap();
    hangup(&child);
    std::thread::sleep(Duration::from_millis(300));
    let body = post(
        port,
        r#"{"features": ["driver_daily_stats_fv:city"], "entities": {"driver_id": [1002]}}"#,
    );
    assert_eq!(body["results"][1]["values"][0], "Patras", "{body}");
    std::fs::write(
        dir.path().join("extra.yaml"),
        "apiVersion: features.kubeflow.org/v1\nkind: FeatureView\nmetadata: { name: extra_fv, namespace: kubeflow-alice }\nspec: { entities: [driver], features: [{ name: x, valueType: INT64 }] }\n",
    )
    .unwrap();
    hangup(&child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = post(port, extra);
        if body["results"][1]["statuses"][0] == "NOT_FOUND" {
            break;
        }
        assert!(Instant::now() < deadline, "not reloaded: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(terminate(&mut child).success());
}

#[test]
fn quickstart_serves_its_demo() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = larder()
        .arg("quickstart")
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);
    let body = post(
        port,
        r#"{"feature_service": "driver_activity", "entities": {"driver_id": [1001, 9999]}}"#,
    );
    assert_eq!(
        body["metadata"]["feature_names"],
        serde_json::json!(["driver_id", "profit", "acc_rate"])
    );
    assert_eq!(
        body["results"][1]["statuses"],
        serde_json::json!(["PRESENT", "NOT_FOUND"])
    );
    assert!(terminate(&mut child).success());
    let mut printed = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut printed).unwrap();
    assert!(
        printed.contains("curl") && printed.contains("grpcurl"),
        "{printed}"
    );
}
