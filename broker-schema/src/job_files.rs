//! Where and with what credential an agent moves one job's files — downloads its attachments
//! and uploads its artifacts — without an API client of its own.
//!
//! The scheduler hands a [`JobFiles`] out with each lease grant and each renewal: the gateway's
//! URL (known to the scheduler by configuration) and a token signed with the gateway's token
//! key (HS256, as access tokens), naming the job, the attempt and the two operations, and
//! expiring with the lease (renewals bring a fresh one). Feature `job-files` issues and
//! verifies the tokens (the scheduler and the gateway); the agent only carries them.
//!
//! A job-files token is not an access token (its `sub` differs, and it carries no permissions):
//! the gateway takes it only for that job's attachments download and artifact upload, and only
//! while that attempt of the job is running.

use crate::timestamp::Millis;
use serde::{Deserialize, Serialize};

/// Where and how to move a job's files, from the lease grant or its last renewal.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFiles {
    /// The gateway's base URL as agents reach it, without a trailing slash.
    pub url: String,
    /// The job-scoped bearer token.
    pub token: String,
    /// When the token expires (the lease's end, give or take the gateway's 5 s leeway).
    pub until: Millis,
}

/// The token stays out of logs.
impl std::fmt::Debug for JobFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobFiles")
            .field("url", &self.url)
            .field("token", &"…")
            .field("until", &self.until)
            .finish()
    }
}

/// What a job-files token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilesOperation {
    /// `GET /v1/job/<id>/attachments`.
    #[serde(rename = "attachments:read")]
    ReadAttachments,
    /// `POST /v1/result/<id>/artifact`.
    #[serde(rename = "artifacts:write")]
    WriteArtifacts,
}

#[cfg(feature = "job-files")]
pub use keys::{FilesClaims, FilesTokenError, JobFilesKey};

#[cfg(feature = "job-files")]
mod keys {
    use super::FilesOperation;
    use crate::timestamp::Millis;
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    /// The `sub` of every job-files token (access tokens have `access_token`).
    pub const SUBJECT: &str = "job_files";

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct FilesClaims {
        pub sub: String,
        pub job_id: Uuid,
        /// The attempt the token was issued to: a reclaimed job's next attempt needs its own.
        pub attempt: u32,
        pub ops: Vec<FilesOperation>,
        pub iat: i64,
        pub exp: i64,
    }

    impl FilesClaims {
        pub fn allows(&self, job_id: Uuid, op: FilesOperation) -> bool {
            self.job_id == job_id && self.ops.contains(&op)
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum FilesTokenError {
        #[error("the job's files token has expired")]
        Expired,
        #[error("not a job files token")]
        Invalid,
    }

    /// Issues (scheduler) and verifies (gateway) job-files tokens with the gateway's token key.
    #[derive(Clone)]
    pub struct JobFilesKey {
        encoding: EncodingKey,
        decoding: DecodingKey,
        validation: Validation,
    }

    impl std::fmt::Debug for JobFilesKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JobFilesKey(…)")
        }
    }

    impl JobFilesKey {
        pub fn new(signing_key: &[u8]) -> JobFilesKey {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.set_required_spec_claims(&["exp", "iat", "sub"]);
            validation.leeway = 5;
            JobFilesKey {
                encoding: EncodingKey::from_secret(signing_key),
                decoding: DecodingKey::from_secret(signing_key),
                validation,
            }
        }

        /// A token for both file operations of `job_id`'s `attempt`, valid until `until`.
        pub fn issue(&self, job_id: Uuid, attempt: u32, now: Millis, until: Millis) -> String {
            let claims = FilesClaims {
                sub: SUBJECT.to_owned(),
                job_id,
                attempt,
                ops: vec![FilesOperation::ReadAttachments, FilesOperation::WriteArtifacts],
                iat: now.0.div_euclid(1000),
                // Rounded up: the token never ends before the lease.
                exp: (until.0 + 999).div_euclid(1000),
            };
            self.sign(&claims)
        }

        /// Signs arbitrary claims (tests use it for expired or foreign-job tokens).
        pub fn sign(&self, claims: &FilesClaims) -> String {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
                .expect("HS256 signing of plain claims cannot fail")
        }

        pub fn verify(&self, token: &str) -> Result<FilesClaims, FilesTokenError> {
            match jsonwebtoken::decode::<FilesClaims>(token, &self.decoding, &self.validation) {
                Ok(data) if data.claims.sub == SUBJECT => Ok(data.claims),
                Ok(_) => Err(FilesTokenError::Invalid),
                Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(FilesTokenError::Expired),
                Err(_) => Err(FilesTokenError::Invalid),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_token_names_its_job_and_operations_and_only_its_key_verifies_it() {
            let key = JobFilesKey::new(b"lab key");
            let job = Uuid::new_v4();
            let now = Millis::now();
            let t = key.issue(job, 2, now, now.plus(std::time::Duration::from_secs(30)));
            let c = key.verify(&t).unwrap();
            assert_eq!((c.job_id, c.attempt), (job, 2));
            assert!(c.allows(job, FilesOperation::ReadAttachments));
            assert!(c.allows(job, FilesOperation::WriteArtifacts));
            assert!(!c.allows(Uuid::new_v4(), FilesOperation::WriteArtifacts));
            assert_eq!(
                JobFilesKey::new(b"other key").verify(&t),
                Err(FilesTokenError::Invalid)
            );
        }

        #[test]
        fn an_expired_token_is_refused() {
            let key = JobFilesKey::new(b"lab key");
            let long_ago = Millis(Millis::now().0 - 3_600_000);
            let t = key.issue(
                Uuid::new_v4(),
                1,
                long_ago,
                long_ago.plus(std::time::Duration::from_secs(30)),
            );
            assert_eq!(key.verify(&t), Err(FilesTokenError::Expired));
        }
    }
}
