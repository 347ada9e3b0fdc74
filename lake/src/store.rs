//! Object stores for the storage root and for other URLs a job writes to.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use schemas::Storage;
use url::Url;

use crate::{Error, Result};

/// The object store of the storage root, and the root's path inside it (the bucket prefix).
#[derive(Debug, Clone)]
pub struct RootStore {
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
}

/// Creates the local directory of `url` (a `file:` URL) if it does not exist. Other schemes
/// have no directories.
pub(crate) fn ensure_local_dir(url: &Url) -> Result<()> {
    if url.scheme() == "file"
        && let Ok(dir) = url.to_file_path()
    {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// The object store of `storage`'s root, with its options (endpoint, keys, path-style,
/// conditional put). A local root is created if missing.
pub fn root_store(storage: &Storage) -> Result<RootStore> {
    let url = storage.root.url();
    ensure_local_dir(url)?;
    let (store, root) = object_store::parse_url_opts(url, storage.options.iter())
        .map_err(|e| Error::store(format!("cannot open {url}"), e))?;
    Ok(RootStore {
        store: Arc::from(store),
        root,
    })
}

/// The object store of `url` (e.g. an export destination), opened with `storage`'s options so
/// that a bucket on the same S3 endpoint needs no settings of its own. A local directory is
/// created if missing.
pub fn url_store(storage: &Storage, url: &Url) -> Result<Arc<dyn ObjectStore>> {
    ensure_local_dir(url)?;
    let (store, _) = object_store::parse_url_opts(url, storage.options.iter())
        .map_err(|e| Error::store(format!("cannot open {url}"), e))?;
    Ok(Arc::from(store))
}
