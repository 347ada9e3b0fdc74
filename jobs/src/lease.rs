//! Leases that make each fire of a job run once when several nodes run the scheduler.
//!
//! A fire `(job, fire time)` owns a folder on the object store. Each attempt at running it is
//! an object `attempt-NNNN.json` created with an atomic create-if-absent write (`If-None-Match:
//! *` on S3, a hard link on a local disk): of the nodes that try to create the same attempt,
//! exactly one succeeds. An attempt expires at the job's timeout plus a grace period — the run
//! is cancelled at its timeout, so an expired attempt belongs to a node that died or hung — and
//! then any node may create the next attempt. `done.json`, created when the fire ends, stops
//! everyone.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where leases live under the storage root.
pub const LEASE_PREFIX: &str = "_sakura/jobs/leases";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AttemptRecord {
    node: String,
    attempt: u32,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DoneRecord {
    node: String,
    status: String,
    finished_at: DateTime<Utc>,
}

/// The answer to "may I run this fire?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Yes, as this attempt (1 for the first).
    Won { attempt: u32 },
    /// The fire has ended (by whom, with which status).
    Done { node: String, status: String },
    /// Another node runs it until `until` (then it may be taken over).
    Held { node: String, until: DateTime<Utc> },
}

/// The leases of one storage root.
#[derive(Debug, Clone)]
pub struct Leases {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    node: String,
}

fn fire_dir(prefix: &Path, job: &str, fire: DateTime<Utc>) -> Path {
    // Zero-padded milliseconds: listings come back in time order.
    prefix
        .clone()
        .join(job)
        .join(format!("{:015}", fire.timestamp_millis().max(0)))
}

impl Leases {
    /// Leases under `prefix` of `store`, taken in the name of `node`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, node: impl Into<String>) -> Self {
        Self {
            store,
            prefix,
            node: node.into(),
        }
    }

    /// Leases under the storage root (`<root>/_sakura/jobs/leases/`).
    pub fn for_storage(storage: &schemas::Storage, node: impl Into<String>) -> Result<Self> {
        let lake::RootStore { store, root } = lake::root_store(storage)?;
        Ok(Self::new(store, lake::paths::leases(&root), node))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    async fn list(&self, dir: &Path) -> Result<Vec<Path>> {
        let metas: Vec<_> = self
            .store
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("cannot list {dir}"), e))?;
        let mut paths: Vec<Path> = metas.into_iter().map(|m| m.location).collect();
        paths.sort();
        Ok(paths)
    }

    async fn read<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T> {
        let bytes = self
            .store
            .get(path)
            .await
            .map_err(|e| Error::store(format!("cannot read {path}"), e))?
            .bytes()
            .await
            .map_err(|e| Error::store(format!("cannot read {path}"), e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::store(
                format!("cannot parse {path}"),
                object_store::Error::Generic {
                    store: "leases",
                    source: Box::new(e),
                },
            )
        })
    }

    /// Creates `path` with `value` unless it exists; `Ok(false)` when it did.
    async fn create<T: Serialize>(&self, path: &Path, value: &T) -> Result<bool> {
        let body = serde_json::to_vec(value).map_err(|e| {
            Error::store(
                format!("cannot encode {path}"),
                object_store::Error::Generic {
                    store: "leases",
                    source: Box::new(e),
                },
            )
        })?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(Error::store(format!("cannot create {path}"), e)),
        }
    }

    /// The fire's state: done, its latest attempt, or nothing yet.
    async fn state(
        &self,
        job: &str,
        fire: DateTime<Utc>,
    ) -> Result<(Option<DoneRecord>, Option<AttemptRecord>)> {
        let dir = fire_dir(&self.prefix, job, fire);
        let paths = self.list(&dir).await?;
        let done_path = dir.clone().join("done.json");
        if paths.contains(&done_path) {
            return Ok((Some(self.read(&done_path).await?), None));
        }
        let last = paths
            .iter()
            .rfind(|p| p.filename().is_some_and(|n| n.starts_with("attempt-")));
        match last {
            Some(p) => Ok((None, Some(self.read(p).await?))),
            None => Ok((None, None)),
        }
    }

    /// Tries to take the fire for a first attempt, or for the next one when the last attempt
    /// expired. `hold`: how long the attempt may run before others may take it over.
    pub async fn claim(
        &self,
        job: &str,
        fire: DateTime<Utc>,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> Result<Claim> {
        let (done, last) = self.state(job, fire).await?;
        if let Some(d) = done {
            return Ok(Claim::Done {
                node: d.node,
                status: d.status,
            });
        }
        let attempt = match last {
            Some(a) if a.expires_at > now => {
                return Ok(Claim::Held {
                    node: a.node,
                    until: a.expires_at,
                });
            }
            Some(a) => a.attempt + 1,
            None => 1,
        };
        if self.try_attempt(job, fire, attempt, now, hold).await? {
            return Ok(Claim::Won { attempt });
        }
        // Someone else created that attempt first: report theirs.
        match self.state(job, fire).await? {
            (Some(d), _) => Ok(Claim::Done {
                node: d.node,
                status: d.status,
            }),
            (None, Some(a)) => Ok(Claim::Held {
                node: a.node,
                until: a.expires_at,
            }),
            (None, None) => Err(Error::job(
                job,
                format!("lease of fire {fire} exists and cannot be listed"),
            )),
        }
    }

    /// Creates attempt `attempt` (a retry after `attempt - 1` failed); `Ok(false)` when another
    /// node took the fire over meanwhile.
    pub async fn try_attempt(
        &self,
        job: &str,
        fire: DateTime<Utc>,
        attempt: u32,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> Result<bool> {
        let path = fire_dir(&self.prefix, job, fire).join(format!("attempt-{attempt:04}.json"));
        let record = AttemptRecord {
            node: self.node.clone(),
            attempt,
            acquired_at: now,
            expires_at: now + chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::MAX),
        };
        self.create(&path, &record).await
    }

    /// Marks the fire ended with `status`; nobody runs it again.
    pub async fn finish(
        &self,
        job: &str,
        fire: DateTime<Utc>,
        status: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let path = fire_dir(&self.prefix, job, fire).join("done.json");
        let record = DoneRecord {
            node: self.node.clone(),
            status: status.to_string(),
            finished_at: now,
        };
        self.create(&path, &record).await.map(|_| ())
    }

    /// Whether the fire has a live attempt and is not done (for skip-if-running).
    pub async fn is_running(
        &self,
        job: &str,
        fire: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(match self.state(job, fire).await? {
            (Some(_), _) | (None, None) => false,
            (None, Some(a)) => a.expires_at > now,
        })
    }

    /// Deletes the lease folders of `job`'s fires before `before` (they are only needed while
    /// a fire may still be claimed). Returns how many objects were deleted.
    pub async fn prune(&self, job: &str, before: DateTime<Utc>) -> Result<usize> {
        let dir = self.prefix.clone().join(job);
        let cutoff = format!("{:015}", before.timestamp_millis().max(0));
        let mut deleted = 0;
        for path in self.list(&dir).await? {
            let fire = path
                .parts()
                .nth(dir.parts().count())
                .map(|p| p.as_ref().to_string());
            if fire.is_some_and(|f| f < cutoff) {
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(Error::store(format!("cannot delete {path}"), e)),
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[tokio::test]
    async fn one_node_wins_a_fire_and_the_other_takes_over_after_expiry() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = Leases::new(store.clone(), Path::from("leases"), "a");
        let b = Leases::new(store.clone(), Path::from("leases"), "b");
        let fire = t("2026-03-01T10:00:00Z");
        let now = t("2026-03-01T10:00:01Z");
        let hold = Duration::from_secs(60);
        assert_eq!(
            a.claim("j", fire, now, hold).await.unwrap(),
            Claim::Won { attempt: 1 }
        );
        assert!(
            matches!(b.claim("j", fire, now, hold).await.unwrap(), Claim::Held { node, .. } if node == "a")
        );
        assert!(b.is_running("j", fire, now).await.unwrap());
        // a dies; after the hold b takes attempt 2 and a's retry of attempt 2 loses.
        let later = now + chrono::Duration::seconds(61);
        assert!(!b.is_running("j", fire, later).await.unwrap());
        assert_eq!(
            b.claim("j", fire, later, hold).await.unwrap(),
            Claim::Won { attempt: 2 }
        );
        assert!(!a.try_attempt("j", fire, 2, later, hold).await.unwrap());
        b.finish("j", fire, "succeeded", later).await.unwrap();
        assert_eq!(
            a.claim("j", fire, later + chrono::Duration::hours(1), hold)
                .await
                .unwrap(),
            Claim::Done {
                node: "b".into(),
                status: "succeeded".into()
            }
        );
        // Another fire is independent; pruning removes the old one only.
        let fire2 = t("2026-03-01T11:00:00Z");
        assert_eq!(
            a.claim("j", fire2, fire2, hold).await.unwrap(),
            Claim::Won { attempt: 1 }
        );
        assert_eq!(a.prune("j", fire2).await.unwrap(), 3);
        assert_eq!(
            b.claim("j", fire2, fire2, hold).await.unwrap(),
            Claim::Held {
                node: "a".into(),
                until: fire2 + chrono::Duration::seconds(60)
            }
        );
    }

    #[tokio::test]
    async fn racing_claims_have_exactly_one_winner() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let fire = t("2026-03-01T10:00:00Z");
        let mut tasks = Vec::new();
        for i in 0..16 {
            let l = Leases::new(store.clone(), Path::from("l"), format!("n{i}"));
            tasks.push(tokio::spawn(async move {
                l.claim("j", fire, fire, Duration::from_secs(60))
                    .await
                    .unwrap()
            }));
        }
        let mut won = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Claim::Won { .. }) {
                won += 1;
            }
        }
        assert_eq!(won, 1);
    }
}
