//! SQLite backend (placeholder, being written).
use super::*;
pub struct SqliteStore;
impl SqliteStore {
    pub async fn open(_path: &std::path::Path) -> StoreResult<Self> {
        Err(StoreError::Other("not yet".into()))
    }
}
