//! The online store contract against real back ends: newer-only writes
//! under concurrency, Feast's own timestamps respected, Redis Cluster reads
//! across every node, and the embedded SQLite store.

mod common;
mod feast_wire;

use std::sync::Arc;
use std::time::Duration;

use common::{RedisCluster, RedisServer, TestServer, cluster_store, fixture_settings, redis_store};
use larder::model::{EventTime, Value};
use larder::online::{KeyRead, OnlineStore, SqliteStore, ViewRow, codec, layout};
use larder::registry::ServedView;

fn daily_view() -> Arc<ServedView> {
    common::fixture_snapshot()
        .view("kubeflow-alice", "driver_daily_stats_fv")
        .unwrap()
        .clone()
}

/// A row whose `trips` value is its own event time, so a read shows which
/// write won.
fn row(driver: i64, ts: i64) -> ViewRow {
    ViewRow {
        keys: vec![Value::Int64(driver)],
        event_time: EventTime::from_seconds(ts),
        values: vec![
            Value::Float(0.5),
            Value::String(format!("city-{ts}")),
            Value::Int64(ts),
            Value::Int32(1),
            Value::Bool(true),
            Value::DoubleList(vec![1.0]),
            Value::Double(ts as f64),
        ],
    }
}

/// The stored bytes of `fields` under each driver's key.
async fn read_drivers(
    store: &OnlineStore,
    view: &ServedView,
    drivers: &[i64],
    fields: &[&[u8]],
) -> larder::online::ReadResult {
    let reads: Vec<KeyRead> = drivers
        .iter()
        .map(|d| KeyRead {
            key: layout::redis_key(
                &["driver_id"],
                &[&Value::Int64(*d)],
                &view.project,
                layout::KeyVersion::V3,
            )
            .unwrap(),
            fields: fields.to_vec(),
            stored_fields: 0,
        })
        .collect();
    let got = store.read(&reads).await.unwrap();
    assert_eq!(got.len(), drivers.len());
    got
}

fn trips_value(bytes: &[u8]) -> i64 {
    match codec::decode_value(bytes).unwrap() {
        Value::Int64(t) => t,
        other => panic!("trips is INT64, found {other:?}"),
    }
}

/// The stored (`_ts`, trips) of each driver.
async fn read_back(store: &OnlineStore, view: &ServedView, drivers: &[i64]) -> Vec<(i64, i64)> {
    let trips = view.feature_index("trips").unwrap();
    let fields: [&[u8]; 2] = [&view.ts_field, &view.feature_fields[trips]];
    let got = read_drivers(store, view, drivers, &fields).await;
    (0..got.len())
        .map(|k| {
            let ts = codec::decode_timestamp(got.get(k, 0).unwrap()).unwrap();
            (ts.seconds, trips_value(got.get(k, 1).unwrap()))
        })
        .collect()
}

/// Eight writers send the same 20 timestamps per key in different orders,
/// concurrently; the newest must win every key.
async fn newest_wins_under_concurrency(store: Arc<OnlineStore>) {
    let view = daily_view();
    let drivers: Vec<i64> = (0..40).map(|i| 5000 + i).collect();
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let store = store.clone();
        let view = view.clone();
        let drivers = drivers.clone();
        tasks.push(tokio::spawn(async move {
            // A different permutation per writer (a simple LCG shuffle).
            let mut order: Vec<i64> = (1..=20).map(|t| 1_700_000_000 + t).collect();
            let mut state = writer
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for i in (1..order.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                order.swap(i, (state >> 33) as usize % (i + 1));
            }
            for ts in order {
                let rows: Vec<ViewRow> = drivers.iter().map(|d| row(*d, ts)).collect();
                store.write_rows(&view, &rows).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (ts, trips) in read_back(&store, &view, &drivers).await {
        assert_eq!(ts, 1_700_000_020);
        assert_eq!(trips, 1_700_000_020);
    }
    // A late, older write changes nothing; a newer one wins.
    let older = store
        .write_rows(&view, &[row(5000, 1_700_000_005)])
        .await
        .unwrap();
    assert_eq!(older, 0);
    let newer = store
        .write_rows(&view, &[row(5000, 1_700_000_021)])
        .await
        .unwrap();
    assert_eq!(newer, 1);
    assert_eq!(
        read_back(&store, &view, &[5000]).await,
        [(1_700_000_021, 1_700_000_021)]
    );
}

#[tokio::test]
async fn redis_newer_only_writes_under_concurrency() {
    let redis = RedisServer::start();
    newest_wins_under_concurrency(Arc::new(redis_store(&redis.url(), Duration::from_secs(2))))
        .await;
}

#[tokio::test]
async fn sqlite_newer_only_writes_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("online.db"), Duration::ZERO)
        .await
        .unwrap();
    newest_wins_under_concurrency(Arc::new(OnlineStore::Sqlite(store))).await;
}

#[tokio::test]
async fn feast_written_timestamps_are_respected() {
    let redis = RedisServer::start();
    common::load_golden(&mut redis.conn());
    let store = redis_store(&redis.url(), Duration::from_secs(2));
    let view = daily_view();
    // Feast wrote driver 1001 at 2021-03-18T19:31:00Z (1616095860).
    assert_eq!(
        store
            .write_rows(&view, &[row(1001, 1_616_095_859)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .write_rows(&view, &[row(1001, 1_616_095_860)])
            .await
            .unwrap(),
        0,
        "an equal time is not newer"
    );
    assert_eq!(
        read_back(&store, &view, &[1001]).await,
        [(1_616_095_860, 12)]
    );
    assert_eq!(
        store
            .write_rows(&view, &[row(1001, 1_616_095_861)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        read_back(&store, &view, &[1001]).await,
        [(1_616_095_861, 1_616_095_861)]
    );
    // The rest of the hash (another view's fields) is untouched.
    let rider_field = layout::feature_field("driver_rider_fv", "rides_together");
    let mut conn = redis.conn();
    let key = common::unhex(
        common::golden()["records"][2]["redis_key_hex"]
            .as_str()
            .unwrap(),
    );
    let stored: Vec<u8> = redis::cmd("HGET")
        .arg(key)
        .arg(&rider_field[..])
        .query(&mut conn)
        .unwrap();
    assert_eq!(common::hex(&stored), "2003");
}

#[tokio::test]
async fn key_ttl_expires_whole_keys() {
    let redis = RedisServer::start();
    let store = OnlineStore::Redis(
        larder::online::RedisStore::new(larder::online::RedisSettings {
            url: redis.url(),
            key_ttl: Duration::from_secs(100),
            ..Default::default()
        })
        .unwrap(),
    );
    let view = daily_view();
    store
        .write_rows(&view, &[row(7, 1_700_000_000)])
        .await
        .unwrap();
    let key = layout::redis_key(
        &["driver_id"],
        &[&Value::Int64(7)],
        "kubeflow_alice",
        layout::KeyVersion::V3,
    )
    .unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut redis.conn()).unwrap();
    assert!((1..=100).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn rows_that_do_not_fit_the_view_are_refused() {
    let redis = RedisServer::start();
    let store = redis_store(&redis.url(), Duration::from_secs(2));
    let view = daily_view();
    let mut bad = row(1, 1);
    bad.values[2] = Value::String("twelve".into());
    let err = store
        .write_rows(&view, &[row(2, 1), bad])
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("row 1") && message.contains("trips"),
        "{message}"
    );
    let mut bad = row(1, 1);
    bad.keys = vec![Value::Double(1.0)];
    let err = store.write_rows(&view, &[bad]).await.unwrap_err();
    assert!(err.to_string().contains("driver_id"), "{err}");
    // Nothing of a refused batch was written.
    let n: i64 = redis::cmd("DBSIZE").query(&mut redis.conn()).unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn redis_cluster_serves_entities_spanning_every_node() {
    let cluster = RedisCluster::start();
    let store = cluster_store(cluster.urls());
    let view = daily_view();
    let drivers: Vec<i64> = (0..60).map(|i| 9000 + i).collect();
    let rows: Vec<ViewRow> = drivers.iter().map(|d| row(*d, 1_700_000_000 + d)).collect();
    assert_eq!(store.write_rows(&view, &rows).await.unwrap(), 60);
    for node in &cluster.nodes {
        let n: i64 = redis::cmd("DBSIZE").query(&mut node.conn()).unwrap();
        assert!(n > 0, "every node holds some of the keys");
    }
    newest_wins_under_concurrency(Arc::new(cluster_store(cluster.urls()))).await;

    let server = TestServer::start(store, fixture_settings()).await;
    let mut client = feast_wire::ServingClient::connect(server.addr).await;
    let resp = client
        .get_online_features(tonic::Request::new(feast_wire::GetOnlineFeaturesRequest {
            kind: feast_wire::features(&[
                "driver_daily_stats_fv:trips",
                "driver_daily_stats_fv:city",
            ]),
            entities: [("driver_id".to_string(), feast_wire::int64s(&drivers))].into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let trips = &resp.results[1];
    assert!(trips.statuses.iter().all(|s| *s == feast_wire::PRESENT));
    for (d, value) in drivers.iter().zip(&trips.values) {
        assert_eq!(
            value.val,
            Some(feast_wire::Val::Int64Val(1_700_000_000 + d))
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn sqlite_store_serves_like_redis() {
    let dir = tempfile::tempdir().unwrap();
    let store = OnlineStore::Sqlite(
        SqliteStore::open(&dir.path().join("online.db"), Duration::ZERO)
            .await
            .unwrap(),
    );
    let view = daily_view();
    store
        .write_rows(&view, &[row(1001, 1_700_000_000)])
        .await
        .unwrap();
    let server = TestServer::start(store, fixture_settings()).await;
    let mut client = feast_wire::ServingClient::connect(server.addr).await;
    let resp = client
        .get_online_features(tonic::Request::new(feast_wire::GetOnlineFeaturesRequest {
            kind: feast_wire::features(&["driver_daily_stats_fv:city"]),
            entities: [("driver_id".to_string(), feast_wire::int64s(&[1001, 1002]))].into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        resp.results[1].values[0].val,
        Some(feast_wire::Val::StringVal("city-1700000000".into()))
    );
    assert_eq!(
        resp.results[1].statuses,
        [feast_wire::PRESENT, feast_wire::NOT_FOUND]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn sqlite_key_ttl_drops_expired_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = OnlineStore::Sqlite(
        SqliteStore::open(&dir.path().join("online.db"), Duration::from_secs(1))
            .await
            .unwrap(),
    );
    let view = daily_view();
    store
        .write_rows(&view, &[row(1, 1_700_000_000)])
        .await
        .unwrap();
    assert_eq!(read_back(&store, &view, &[1]).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let key = layout::redis_key(
        &["driver_id"],
        &[&Value::Int64(1)],
        "kubeflow_alice",
        layout::KeyVersion::V3,
    )
    .unwrap();
    let got = store
        .read(&[KeyRead {
            key,
            fields: vec![&view.ts_field],
            stored_fields: 0,
        }])
        .await
        .unwrap()
        .to_vecs();
    assert_eq!(got, vec![vec![None]]);
    // An older write after expiry is written: nothing is stored any more.
    assert_eq!(
        store
            .write_rows(&view, &[row(1, 1_600_000_000)])
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn hgetall_reads_answer_like_hmget() {
    let redis = RedisServer::start();
    common::load_golden(&mut redis.conn());
    let store = |read_command| {
        OnlineStore::Redis(
            larder::online::RedisStore::new(larder::online::RedisSettings {
                url: redis.url(),
                read_command,
                ..Default::default()
            })
            .unwrap(),
        )
    };
    let hmget = store(larder::online::ReadCommand::Hmget);
    let hgetall = store(larder::online::ReadCommand::Hgetall);
    let view = daily_view();
    let rider = layout::feature_field("driver_rider_fv", "rides_together");
    let missing = layout::feature_field("driver_daily_stats_fv", "no_such_feature");
    let keys: Vec<Vec<u8>> = [1001i64, 1002, 4242]
        .iter()
        .map(|d| {
            layout::redis_key(
                &["driver_id"],
                &[&Value::Int64(*d)],
                "kubeflow_alice",
                layout::KeyVersion::V3,
            )
            .unwrap()
        })
        .collect();
    let reads: Vec<KeyRead> = keys
        .iter()
        .map(|k| KeyRead {
            key: k.clone(),
            fields: vec![
                &view.feature_fields[2],
                &view.ts_field,
                &missing,
                &rider,
                &view.feature_fields[0],
            ],
            stored_fields: 0,
        })
        .collect();
    let a = hmget.read(&reads).await.unwrap().to_vecs();
    let b = hgetall.read(&reads).await.unwrap().to_vecs();
    assert_eq!(a, b);
    assert_eq!(
        common::hex(a[0][0].as_deref().unwrap()),
        "200c",
        "trips of 1001"
    );
    assert_eq!(a[0][2], None);
    assert_eq!(a[2], vec![None; 5], "an unknown driver has nothing");

    // Every field of the view in the order they were written, as a
    // whole-view read asks: HGETALL's reply comes in the same order.
    let in_order: Vec<&[u8]> = std::iter::once(view.ts_field.as_slice())
        .chain(view.feature_fields.iter().map(|f| f.as_slice()))
        .collect();
    let reads: Vec<KeyRead> = keys
        .iter()
        .map(|k| KeyRead {
            key: k.clone(),
            fields: in_order.clone(),
            stored_fields: 0,
        })
        .collect();
    let a = hmget.read(&reads).await.unwrap().to_vecs();
    let b = hgetall.read(&reads).await.unwrap().to_vecs();
    assert_eq!(a, b);
    assert!(a[0].iter().all(Option::is_some), "1001 has every field");
}

#[tokio::test]
async fn redis_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let redis = RedisServer::start_with(&[
        "--unixsocket",
        socket.to_str().unwrap(),
        "--unixsocketperm",
        "700",
    ]);
    let store = redis_store(
        &format!("unix://{}", socket.display()),
        Duration::from_secs(2),
    );
    let view = daily_view();
    assert_eq!(
        store
            .write_rows(&view, &[row(77, 1_700_000_000)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        read_back(&store, &view, &[77]).await,
        [(1_700_000_000, 1_700_000_000)]
    );
    // The same data over TCP: one server.
    let tcp = redis_store(&redis.url(), Duration::from_secs(2));
    assert_eq!(
        read_back(&tcp, &view, &[77]).await,
        [(1_700_000_000, 1_700_000_000)]
    );
}

/// Reads of `drivers`' trips through one store.
async fn trips_of(store: &OnlineStore, view: &ServedView, drivers: &[i64]) -> Vec<Option<i64>> {
    let trips = view.feature_index("trips").unwrap();
    let fields = [
        view.feature_fields[1].as_slice(),
        &view.feature_fields[trips],
    ];
    let got = read_drivers(store, view, drivers, &fields).await;
    (0..got.len())
        .map(|k| got.get(k, 1).map(trips_value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_sharing_connections_each_get_their_own_replies() {
    let redis = RedisServer::start();
    let store = Arc::new(OnlineStore::Redis(
        larder::online::RedisStore::new(larder::online::RedisSettings {
            url: redis.url(),
            connections: 2,
            ..Default::default()
        })
        .unwrap(),
    ));
    let view = daily_view();
    let rows: Vec<ViewRow> = (1..=300).map(|d| row(d, 1_700_000_000 + d)).collect();
    store.write_rows(&view, &rows).await.unwrap();
    // One value larger than a socket read, so replies arrive in pieces.
    let mut big = row(1000, 1_700_001_000);
    big.values[1] = Value::String("x".repeat(300_000));
    store.write_rows(&view, &[big]).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200i64 {
        let (store, view) = (store.clone(), view.clone());
        tasks.spawn(async move {
            let first = (i * 7) % 300 + 1;
            let mut drivers: Vec<i64> = (first..first + 1 + i % 60).collect();
            if i % 10 == 0 {
                drivers.push(1000);
            }
            drivers.push(5000 + i); // never written
            let got = trips_of(&store, &view, &drivers).await;
            for (d, t) in drivers.iter().zip(got) {
                let want = match *d {
                    d if d <= 300 => Some(1_700_000_000 + d),
                    1000 => Some(1_700_001_000),
                    _ => None,
                };
                assert_eq!(t, want, "driver {d} in read {i}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test]
async fn a_timed_out_read_leaves_the_connection_in_step() {
    let redis = RedisServer::start();
    let store = OnlineStore::Redis(
        larder::online::RedisStore::new(larder::online::RedisSettings {
            url: redis.url(),
            connections: 1,
            timeout: Duration::from_millis(150),
            ..Default::default()
        })
        .unwrap(),
    );
    let view = daily_view();
    store
        .write_rows(&view, &[row(1, 1_700_000_001), row(2, 1_700_000_002)])
        .await
        .unwrap();
    assert_eq!(
        trips_of(&store, &view, &[1]).await,
        vec![Some(1_700_000_001)]
    );
    // Redis holds every client's commands for a while: the read gives up,
    // and its reply arrives later on the same connection.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(600)
        .arg("ALL")
        .query(&mut redis.conn())
        .unwrap();
    let key = layout::redis_key(
        &["driver_id"],
        &[&Value::Int64(1)],
        &view.project,
        layout::KeyVersion::V3,
    )
    .unwrap();
    let err = store
        .read(&[KeyRead {
            key,
            fields: vec![&view.ts_field],
            stored_fields: 0,
        }])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The next read gets its own reply, not the late one.
    assert_eq!(
        trips_of(&store, &view, &[2, 1]).await,
        vec![Some(1_700_000_002), Some(1_700_000_001)]
    );
}

#[tokio::test]
async fn wrong_redis_credentials_are_denied_on_reads_and_ping() {
    let redis = RedisServer::start();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("reader")
        .arg("on")
        .arg(">right")
        .arg("~*")
        .arg("+@read")
        .arg("+ping")
        .query(&mut redis.conn())
        .unwrap();
    let store = |password: &str| {
        OnlineStore::Redis(
            larder::online::RedisStore::new(larder::online::RedisSettings {
                url: redis.url(),
                credentials: Some(larder::online::RedisCredentials {
                    username: "reader".into(),
                    password: password.into(),
                }),
                ..Default::default()
            })
            .unwrap(),
        )
    };
    let view = daily_view();
    let good = store("right");
    good.ping().await.unwrap();
    assert_eq!(trips_of(&good, &view, &[7]).await, vec![None]);
    let bad = store("wrong");
    let err = bad.ping().await.unwrap_err();
    assert!(
        matches!(err, larder::online::StoreError::Denied(_)),
        "{err:?}"
    );
    let err = bad
        .read(&[KeyRead {
            key: b"k".to_vec(),
            fields: vec![&view.ts_field],
            stored_fields: 0,
        }])
        .await
        .unwrap_err();
    assert!(
        matches!(err, larder::online::StoreError::Denied(_)),
        "{err:?}"
    );
}

/// Redis restarting (a failover, a rescheduled pod) costs no read once it
/// is back: a connection it closed while idle is seen closed at once, and a
/// read whose connection ends under it is sent again, once, on a new one.
#[tokio::test]
async fn reads_after_a_redis_restart_all_succeed() {
    let mut redis = RedisServer::start();
    let view = daily_view();
    let store = redis_store(&redis.url(), Duration::from_secs(2));
    let want = [(1_700_000_000, 1_700_000_000)];
    store
        .write_rows(&view, &[row(77, 1_700_000_000)])
        .await
        .unwrap();
    // Every read connection made and in use.
    for _ in 0..8 {
        assert_eq!(read_back(&store, &view, &[77]).await, want);
    }

    // Restarted between two reads, before the store has run again: the
    // first read is queued on a connection whose end nobody has read yet.
    restart_and_reload(&mut redis, &view).await;
    for _ in 0..8 {
        assert_eq!(read_back(&store, &view, &[77]).await, want);
    }

    // Restarted while the store sat idle: every connection's end is seen
    // as it happens, so even a PING, which is never repeated, finds a new
    // connection.
    restart_and_reload(&mut redis, &view).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..8 {
        store.ping().await.unwrap();
    }
    assert_eq!(read_back(&store, &view, &[77]).await, want);
}

/// Restarts `redis`, which comes back empty, and writes driver 77's row
/// again through a store of its own.
async fn restart_and_reload(redis: &mut RedisServer, view: &ServedView) {
    redis.restart();
    redis_store(&redis.url(), Duration::from_secs(2))
        .write_rows(view, &[row(77, 1_700_000_000)])
        .await
        .unwrap();
}

/// Writes ride out a Redis restart too: a write whose connection ended
/// while Redis was away is sent again, once, on the reconnected one.
#[tokio::test]
async fn writes_after_a_redis_restart_succeed() {
    let mut redis = RedisServer::start();
    let view = daily_view();
    let store = redis_store(&redis.url(), Duration::from_secs(2));
    // Every write connection made and in use.
    for driver in 0..8 {
        store
            .write_rows(&view, &[row(driver, 1_700_000_000)])
            .await
            .unwrap();
    }

    redis.restart();
    for driver in 0..8 {
        assert_eq!(
            store
                .write_rows(&view, &[row(driver, 1_700_000_100)])
                .await
                .unwrap(),
            1,
            "driver {driver}"
        );
    }
    let want: Vec<(i64, i64)> = vec![(1_700_000_100, 1_700_000_100); 8];
    assert_eq!(
        read_back(&store, &view, &(0..8).collect::<Vec<_>>()).await,
        want
    );
}
