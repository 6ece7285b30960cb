use butterfly_store_duckdb::DuckDbStore;

#[test]
fn conformance_in_memory() {
    butterfly_store::conformance::check_store(|| {
        DuckDbStore::open_in_memory().expect("an in-memory store opens")
    });
}
