//! Where things live under the storage root. Every object-store path this crate's users build
//! goes through here.

use std::collections::HashMap;

use url::Url;

use crate::{Error, Result, TableRef};

/// The root URL all tables live under: `file:///abs/dir/`, `s3://bucket/prefix/` or `memory:///`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRoot(Url);

impl StorageRoot {
    /// Parses a root URL; a plain path (absolute or relative) means a local directory.
    pub fn parse(s: &str) -> Result<Self> {
        let err = |message: String| Error::StorageUrl {
            url: s.to_string(),
            message,
        };
        let mut url = match Url::parse(s) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ => {
                let path = std::path::absolute(s).map_err(|e| err(e.to_string()))?;
                Url::from_directory_path(&path)
                    .map_err(|()| err("not an absolute directory path".into()))?
            }
        };
        match url.scheme() {
            "file" | "s3" | "s3a" | "memory" => {}
            other => {
                return Err(err(format!(
                    "unsupported scheme {other:?} (use file, s3 or memory)"
                )));
            }
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Self(url))
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    pub fn is_local(&self) -> bool {
        self.0.scheme() == "file"
    }
}

impl std::fmt::Display for StorageRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The storage root plus the options object stores need to reach it (S3 endpoint, keys, ...),
/// in the `aws_*` key form that `object_store` and `deltalake` understand.
#[derive(Clone, PartialEq, Eq)]
pub struct Storage {
    pub root: StorageRoot,
    pub options: HashMap<String, String>,
}

impl Storage {
    pub fn new(root: StorageRoot, options: HashMap<String, String>) -> Self {
        Self { root, options }
    }

    /// A local directory as the store, with no options.
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        Ok(Self::new(
            StorageRoot::parse(&dir.to_string_lossy())?,
            HashMap::new(),
        ))
    }

    pub fn table_url(&self, table: &TableRef) -> Result<Url> {
        table_location(&self.root, table)
    }
}

// Options hold credentials: print only their keys.
impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<_> = self.options.keys().collect();
        keys.sort();
        f.debug_struct("Storage")
            .field("root", &self.root.to_string())
            .field("option_keys", &keys)
            .finish()
    }
}

/// The location of a table: `<root>/<schema>/<table>/`.
pub fn table_location(root: &StorageRoot, table: &TableRef) -> Result<Url> {
    root.0
        .join(&format!("{}/{}/", table.schema, table.name))
        .map_err(|e| Error::StorageUrl {
            url: root.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_become_file_urls_with_trailing_slash() {
        let root = StorageRoot::parse("/tmp/sakura-data").unwrap();
        assert_eq!(root.url().as_str(), "file:///tmp/sakura-data/");
        let t = TableRef::new("raw", "telemetry");
        assert_eq!(
            table_location(&root, &t).unwrap().as_str(),
            "file:///tmp/sakura-data/raw/telemetry/"
        );
    }

    #[test]
    fn s3_roots_keep_bucket_and_prefix() {
        let root = StorageRoot::parse("s3://lake/prod").unwrap();
        let t = TableRef::new("raw", "logs");
        assert_eq!(
            table_location(&root, &t).unwrap().as_str(),
            "s3://lake/prod/raw/logs/"
        );
    }

    #[test]
    fn unknown_schemes_are_rejected() {
        let e = StorageRoot::parse("ftp://x/y").unwrap_err().to_string();
        assert!(e.contains("unsupported scheme"), "{e}");
    }
}
