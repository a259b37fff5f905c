//! The per-test database: a clone of a template migrated once per migration set,
//! dropped when the test's `TestDb` goes out of scope.

use tokio_postgres::NoTls;
use uuid::Uuid;

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("TEST_PG_ADMIN_URL").unwrap_or_else(|_| ADMIN_URL.to_owned())
}

fn db_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_url(), NoTls)
        .await
        .expect("PostgreSQL is running");
    tokio::spawn(conn);
    client
}

/// Creates (once per migration set) a migrated template database.
async fn template() -> String {
    let name = format!("billing_tpl_{}", billing::db::migrations_fingerprint());
    let client = admin().await;
    client
        .batch_execute("SELECT pg_advisory_lock(4242001)")
        .await
        .unwrap();
    let ready: Option<bool> = client
        .query_opt(
            "SELECT datistemplate FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .map(|r| r.get(0));
    if ready != Some(true) {
        if ready.is_some() {
            client
                .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                .await
                .unwrap();
        }
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        billing::db::migrate(&db_url(&name))
            .await
            .expect("migrations apply");
        client
            .batch_execute(&format!("ALTER DATABASE \"{name}\" IS_TEMPLATE true"))
            .await
            .unwrap();
    }
    client
        .batch_execute("SELECT pg_advisory_unlock(4242001)")
        .await
        .unwrap();
    name
}

/// A database owned by one test, dropped when it goes out of scope.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let template = template().await;
        let name = format!("billing_test_{}", Uuid::new_v4().simple());
        let client = admin().await;
        let mut tries = 0;
        loop {
            match client
                .batch_execute(&format!(
                    "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
                ))
                .await
            {
                Ok(()) => break,
                // Another test cloning the template at the same moment.
                Err(e) if tries < 20 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(50 * tries)).await;
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        TestDb {
            url: db_url(&name),
            name,
        }
    }

    /// A database with no schema at all (a test migrates it step by step).
    pub async fn empty() -> TestDb {
        let name = format!("billing_test_{}", Uuid::new_v4().simple());
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("an empty test database");
        TestDb {
            url: db_url(&name),
            name,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context; a short-lived runtime does the DROP.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin_url(), NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
