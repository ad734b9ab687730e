//! MongoDB backend (placeholder, being written).
use super::*;
pub struct MongoStore;
impl MongoStore {
    pub async fn open(_uri: &str, _db: &str) -> StoreResult<Self> {
        Err(StoreError::Other("not yet".into()))
    }
}
