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

/// A Redis of the test's own holding the golden data, a directory with the
/// fixture definitions, and a free port to serve them on.
fn golden_fixture() -> (common::RedisServer, tempfile::TempDir, u16) {
    let redis = common::RedisServer::start();
    common::load_golden(&mut redis.conn());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("defs.yaml"), common::FIXTURE_DEFINITIONS).unwrap();
    (redis, dir, common::free_port())
}

/// `larder serve` of the definitions in `dir` on `port`, reading the
/// golden data from the Redis at `redis_url`.
fn serve_golden(dir: &std::path::Path, port: u16, redis_url: &str) -> Command {
    let mut cmd = larder();
    cmd.arg("serve")
        .arg("-d")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("LARDER__ONLINE_STORE__TYPE", "redis")
        .env("LARDER__ONLINE_STORE__REDIS__URL", redis_url)
        .env("LARDER__SERVE__DEFAULT_NAMESPACE", "kubeflow-alice")
        .stdout(Stdio::null());
    cmd
}

#[test]
fn serve_drains_and_exits_cleanly_on_sigterm() {
    let (redis, dir, port) = golden_fixture();
    let mut child = serve_golden(dir.path(), port, &redis.url())
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
fn one_runtime_thread_runs_the_current_thread_scheduler() {
    let (redis, dir, port) = golden_fixture();
    let log = dir.path().join("larder.log");
    let mut child = serve_golden(dir.path(), port, &redis.url())
        .env("TOKIO_WORKER_THREADS", "1")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);
    // Many requests at once on the one thread: every one is answered.
    let bodies = block_on(async {
        let client = reqwest::Client::new();
        let sends = (0..32).map(|i| {
            let id = if i % 2 == 0 { 1002 } else { 1001 };
            client
                .post(format!("http://127.0.0.1:{port}/get-online-features"))
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"features": ["driver_daily_stats_fv:city"], "entities": {{"driver_id": [{id}]}}}}"#
                ))
                .send()
        });
        let mut bodies = Vec::new();
        for response in futures::future::join_all(sends).await {
            bodies.push(response.unwrap().json::<serde_json::Value>().await.unwrap());
        }
        bodies
    });
    for (i, body) in bodies.iter().enumerate() {
        let want = if i % 2 == 0 { "Patras" } else { "Athens" };
        assert_eq!(body["results"][1]["values"][0], want, "{body}");
    }
    assert!(terminate(&mut child).success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("runtime=CurrentThread"), "{log}");
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
    // The demo's on-demand view: 97.9 profit over 12 trips, plus a bonus.
    let body = post(
        port,
        r#"{"features": ["driver_pay_odfv:profit_per_trip", "driver_pay_odfv:profit_with_bonus"],
            "entities": {"driver_id": [1001]}, "request_context": {"bonus": [2.1]}}"#,
    );
    assert_eq!(
        body["results"][1]["values"],
        serde_json::json!([97.9 / 12.0])
    );
    assert_eq!(
        body["results"][2]["values"],
        serde_json::json!([97.9 + 2.1])
    );
    assert!(terminate(&mut child).success());
    let mut printed = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut printed).unwrap();
    assert!(
        printed.contains("curl") && printed.contains("grpcurl"),
        "{printed}"
    );
}

fn get_text(url: &str) -> (u16, String) {
    block_on(async {
        let resp = reqwest::get(url).await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

fn start_registry(db: &str, port: u16) -> Child {
    start_registry_with(larder(), db, port)
}

/// `larder registry serve` from `command` (which may carry a config).
fn start_registry_with(mut command: Command, db: &str, port: u16) -> Child {
    let child = command
        .args(["registry", "serve", "--database", db])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_text_ok(&format!("http://127.0.0.1:{port}/health")).is_none() {
        assert!(Instant::now() < deadline, "registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn get_text_ok(url: &str) -> Option<String> {
    block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })
}

/// `larder serve` following the registry, with a snapshot cache.
fn spawn_following(
    port: u16,
    registry_url: &str,
    redis_url: &str,
    cache: &std::path::Path,
) -> Child {
    larder()
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--registry", registry_url])
        .env("LARDER__ONLINE_STORE__TYPE", "redis")
        .env("LARDER__ONLINE_STORE__REDIS__URL", redis_url)
        .env("LARDER__SERVE__DEFAULT_NAMESPACE", "kubeflow-alice")
        .env("LARDER__SERVE__SNAPSHOT_CACHE", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The seed's flow: apply definitions to the registry, a feature server
/// follows it, picks up a new view within a second of `apply`, keeps
/// serving with the registry stopped (and says so), and catches up when it
/// returns.
#[test]
fn apply_to_the_registry_and_serve_what_it_holds() {
    let redis = common::RedisServer::start();
    common::load_golden(&mut redis.conn());
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("registry.db").display()
    );
    let registry_port = common::free_port();
    let registry_url = format!("http://127.0.0.1:{registry_port}");
    let mut registry = start_registry(&db, registry_port);

    let defs = dir.path().join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    let base = common::FIXTURE_DEFINITIONS.split("---\napiVersion: features.kubeflow.org/v1\nkind: FeatureView\nmetadata: { name: driver_rider_fv").next().unwrap();
    std::fs::write(defs.join("alice.yaml"), base).unwrap();
    let apply = |path: &std::path::Path| {
        let out = larder()
            .args(["apply", "-f"])
            .arg(path)
            .args(["--registry", &registry_url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let plan = apply(&defs);
    assert!(
        plan.contains("featureview kubeflow-alice/driver_daily_stats_fv created"),
        "{plan}"
    );
    assert!(apply(&defs).contains("entity kubeflow-alice/driver unchanged"));

    let out = larder()
        .args([
            "get",
            "featureviews",
            "-n",
            "kubeflow-alice",
            "--registry",
            &registry_url,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("driver_daily_stats_fv"));
    let out = larder()
        .args([
            "get",
            "featureviews",
            "-A",
            "-o",
            "wide",
            "--registry",
            &registry_url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("entities=driver features=7 ttl=none"),
        "{text}"
    );
    let out = larder()
        .args([
            "describe",
            "featureviews",
            "driver_daily_stats_fv",
            "-n",
            "kubeflow-alice",
        ])
        .args(["--registry", &registry_url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Entities:         driver"), "{text}");
    assert!(text.contains("profit") && text.contains("DOUBLE"), "{text}");

    let port = common::free_port();
    let cache = dir.path().join("snapshot.json");
    let mut server = spawn_following(port, &registry_url, &redis.url(), &cache);
    wait_ready(port, &mut server);
    let body = post(
        port,
        r#"{"features": ["driver_daily_stats_fv:city"], "entities": {"driver_id": [1002]}}"#,
    );
    assert_eq!(body["results"][1]["values"][0], "Patras", "{body}");

    // A new view is served within a second of `apply`.
    let rider = r#"{"features": ["driver_rider_fv:rides_together"], "entities": {"driver_id": [1001], "rider_name": ["bob"]}}"#;
    assert_eq!(post(port, rider)["error"]["code"], "not_found");
    std::fs::write(defs.join("alice.yaml"), common::FIXTURE_DEFINITIONS).unwrap();
    apply(&defs);
    // Timed from the end of `apply`: the registry has the view from then on.
    let applied = Instant::now();
    loop {
        let body = post(port, rider);
        if body["results"][2]["values"][0] == 3 {
            break;
        }
        assert!(
            applied.elapsed() < Duration::from_secs(1),
            "not served within 1 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The registry stops: serving goes on, readiness says how stale.
    assert!(terminate(&mut registry).success());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(post(port, rider)["results"][2]["values"][0], 3);
    let (status, ready) = get_text(&format!("http://127.0.0.1:{port}/ready"));
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains("the registry last answered"), "{ready}");
    let (_, metrics) = get_text(&format!("http://127.0.0.1:{port}/metrics"));
    assert!(
        metrics.contains("larder_registry_seconds_since_sync"),
        "{metrics}"
    );

    // A server started during the outage serves the saved snapshot.
    let port2 = common::free_port();
    let mut second = spawn_following(port2, &registry_url, &redis.url(), &cache);
    wait_ready(port2, &mut second);
    assert_eq!(post(port2, rider)["results"][2]["values"][0], 3);
    let (_, ready) = get_text(&format!("http://127.0.0.1:{port2}/ready"));
    assert!(ready.contains("saved snapshot"), "{ready}");
    assert!(terminate(&mut second).success());

    // It comes back and the server catches up.
    let mut registry = start_registry(&db, registry_port);
    let out = larder()
        .args([
            "delete",
            "featureviews",
            "driver_rider_fv",
            "-n",
            "kubeflow-alice",
            "--registry",
            &registry_url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if post(port, rider)["error"]["code"] == "not_found" {
            break;
        }
        assert!(Instant::now() < deadline, "did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Prune what the files no longer hold: a dry run changes nothing.
    std::fs::write(defs.join("alice.yaml"), base).unwrap();
    let prune = |dry_run: bool| {
        let mut cmd = larder();
        cmd.args(["apply", "--prune", "-f"])
            .arg(&defs)
            .args(["--registry", &registry_url]);
        if dry_run {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let plan = prune(true);
    assert!(
        plan.contains("featureview kubeflow-alice/driver_hourly_fv deleted (dry run)"),
        "{plan}"
    );
    let plan = prune(false);
    let service = plan
        .find("featureservice kubeflow-alice/driver_activity deleted\n")
        .expect("the service is pruned");
    let view = plan
        .find("featureview kubeflow-alice/driver_hourly_fv deleted\n")
        .expect("the view is pruned");
    assert!(service < view, "referrers go first: {plan}");
    assert!(
        plan.contains("entity kubeflow-alice/legacy_driver deleted"),
        "{plan}"
    );
    assert!(
        prune(true).lines().all(|l| !l.contains("deleted")),
        "nothing left to prune"
    );

    assert!(terminate(&mut server).success());
    assert!(terminate(&mut registry).success());
}

/// The whole flow with authentication on, through the real binaries: a
/// registry and a following feature server on static tokens and the shipped
/// RBAC manifests; `apply` and reads with each caller's token; `can-i`.
#[test]
fn registry_and_server_enforce_tokens_and_rbac() {
    let dir = tempfile::tempdir().unwrap();
    let policy = common::jwt::story_policy();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "t-alice,system:serviceaccount:kubeflow-alice:default-editor,1,\"system:serviceaccounts,system:serviceaccounts:kubeflow-alice\"\n\
         t-bob,system:serviceaccount:kubeflow-bob:default-editor,2,\"system:serviceaccounts,system:serviceaccounts:kubeflow-bob\"\n\
         t-server,system:serviceaccount:kubeflow:larder-feature-server,3\n",
    )
    .unwrap();
    let server_token = dir.path().join("server-token");
    std::fs::write(&server_token, "t-server\n").unwrap();
    let config = dir.path().join("larder.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  authentication: static\n  static_token_file: {}\n  rbac_policy: [{}]\n",
            tokens.display(),
            policy.path().display()
        ),
    )
    .unwrap();
    let definitions = dir.path().join("alice.yaml");
    std::fs::write(
        &definitions,
        "apiVersion: features.kubeflow.org/v1\nkind: Entity\nmetadata: { name: driver, namespace: kubeflow-alice }\n\
         spec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }\n---\n\
         apiVersion: features.kubeflow.org/v1\nkind: FeatureView\nmetadata: { name: driver_daily_stats, namespace: kubeflow-alice }\n\
         spec:\n  entities: [driver]\n  features: [{ name: trips, valueType: INT64 }]\n",
    )
    .unwrap();

    let port = common::free_port();
    let registry_url = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}/registry.db?mode=rwc", dir.path().display());
    let mut with_config = larder();
    with_config.args(["-c", config.to_str().unwrap()]);
    let mut registry = start_registry_with(with_config, &db, port);

    let apply = |token: &str| {
        larder()
            .args(["-c", config.to_str().unwrap()])
            .args(["apply", "-f", definitions.to_str().unwrap()])
            .args(["--registry", &registry_url])
            .env("LARDER_TOKEN", token)
            .output()
            .unwrap()
    };
    let bob = apply("t-bob");
    assert!(!bob.status.success());
    let said = String::from_utf8_lossy(&bob.stderr);
    assert!(
        said.contains("403") && said.contains("kubeflow-bob"),
        "{said}"
    );
    let alice = apply("t-alice");
    assert!(
        alice.status.success(),
        "{}",
        String::from_utf8_lossy(&alice.stderr)
    );

    // can-i answers from the configured authorizer, for a token or --as.
    let can_i = |args: &[&str], token: &str| {
        larder()
            .args(["-c", config.to_str().unwrap(), "auth", "can-i"])
            .args(args)
            .env("LARDER_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = can_i(
        &[
            "get",
            "featureviews/driver_daily_stats",
            "-n",
            "kubeflow-alice",
        ],
        "t-alice",
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    let out = can_i(
        &[
            "get",
            "featureviews/driver_daily_stats",
            "-n",
            "kubeflow-alice",
            "--as",
            "system:serviceaccount:kubeflow-bob:default-editor",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    let out = can_i(&["fly", "featureviews", "-n", "kubeflow-alice"], "t-alice");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown verb"));

    // The feature server follows the registry with its own token, and
    // checks each reader's.
    let redis = common::RedisServer::start();
    let serve_port = common::free_port();
    let mut server = larder()
        .args(["-c", config.to_str().unwrap()])
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{serve_port}")])
        .args(["--registry", &registry_url])
        .env("LARDER__ONLINE_STORE__TYPE", "redis")
        .env("LARDER__ONLINE_STORE__REDIS__URL", redis.url())
        .env("LARDER__REGISTRY__TOKEN_FILE", &server_token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(serve_port, &mut server);
    let read = |token: Option<&str>| {
        block_on(async {
            let mut request = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{serve_port}/get-online-features"))
                .json(&serde_json::json!({
                    "features": ["kubeflow-alice/driver_daily_stats:trips"],
                    "entities": {"driver_id": [1001]},
                }));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            request.send().await.unwrap().status().as_u16()
        })
    };
    assert_eq!(read(Some("t-alice")), 200);
    assert_eq!(read(Some("t-bob")), 403);
    assert_eq!(read(None), 401);
    assert_eq!(read(Some("t-nobody")), 401);
    terminate(&mut server);
    terminate(&mut registry);
}

/// Without authentication larder listens on loopback only, unless told.
#[test]
fn no_authentication_refuses_public_addresses() {
    let port = common::free_port();
    let out = larder()
        .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
        .args(["-d", "tests/fixtures"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("allow_insecure_bind"), "{said}");
}
