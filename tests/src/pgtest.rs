//! PostgreSQL for tests: each test gets a fresh schema in the database that
//! `DIEMDANH_TEST_POSTGRES` names, dropped again when the test ends, so runs and tests
//! never see each other's rows. Without the variable the PostgreSQL tests say they did
//! not run; under CI (`CI` set) its absence is a failure, so CI cannot pass without them.

use rand::RngCore;

pub const ENV: &str = "DIEMDANH_TEST_POSTGRES";

/// A schema of its own in the test database, dropped on drop.
pub struct TestSchema {
    base: String,
    pub schema: String,
    /// The URL a store (or a `diemdanh-server --database`) opens: the base URL with the
    /// schema as its search path.
    pub url: String,
}

impl TestSchema {
    /// A fresh schema, or None (with a line on stderr) when no test database is set.
    pub fn create(test: &str) -> Option<TestSchema> {
        let Ok(base) = std::env::var(ENV) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{ENV} is not set under CI: the PostgreSQL half of `{test}` must run there"
            );
            eprintln!("{test}: PostgreSQL half NOT RUN ({ENV} is not set)");
            return None;
        };
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        let schema = format!("t_{}", hex_lower(&bytes));
        let mut client = postgres::Client::connect(&base, postgres::NoTls).expect("connect to the test database");
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .expect("create a test schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Some(TestSchema { base, schema, url })
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.base, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
