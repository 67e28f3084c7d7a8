//! Databases for registry tests: a SQLite file, or a database created in
//! the local PostgreSQL or MariaDB and dropped when the test ends (even when
//! it fails).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use larder::registry::store::SqlRegistryStore;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A database of this test's own, dropped when the test ends.
pub struct TestDb {
    pub url: String,
    drop: Option<(String, String)>, // (admin url, database name)
    _dir: Option<tempfile::TempDir>,
}

fn unique_name() -> String {
    format!(
        "larder_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn admin_exec(admin: &str, statement: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to {admin}: {e} (scripts/services.sh starts it)"));
    sqlx::query(statement).execute(&mut conn).await.unwrap();
}

impl TestDb {
    pub async fn new(kind: &str) -> TestDb {
        match kind {
            "sqlite" => {
                let dir = tempfile::tempdir().unwrap();
                TestDb {
                    url: format!(
                        "sqlite://{}?mode=rwc",
                        dir.path().join("registry.db").display()
                    ),
                    drop: None,
                    _dir: Some(dir),
                }
            }
            "postgres" | "mysql" => {
                let (variable, default) = if kind == "postgres" {
                    (
                        "LARDER_TEST_POSTGRES_URL",
                        "postgres://postgres@127.0.0.1:5432/postgres",
                    )
                } else {
                    ("LARDER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql")
                };
                let admin = std::env::var(variable).unwrap_or_else(|_| default.into());
                let name = unique_name();
                admin_exec(&admin, &format!("CREATE DATABASE {name}")).await;
                let base = admin.rsplit_once('/').unwrap().0;
                TestDb {
                    url: format!("{base}/{name}"),
                    drop: Some((admin, name)),
                    _dir: None,
                }
            }
            other => panic!("unknown database {other}"),
        }
    }

    pub async fn cleanup(self, store: SqlRegistryStore) {
        drop(store);
        drop(self);
    }
}

/// Drops the test's database even when the test failed, from a thread of
/// its own (the test's runtime may be gone).
impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.drop.take() {
            let force = if admin.starts_with("postgres") {
                " WITH (FORCE)"
            } else {
                ""
            };
            let statement = format!("DROP DATABASE IF EXISTS {name}{force}");
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(admin_exec(&admin, &statement));
            })
            .join();
        }
    }
}
