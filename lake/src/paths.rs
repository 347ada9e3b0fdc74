//! Where things live under the storage root, besides the tables themselves
//! (`<root>/<schema>/<table>/`, [`schemas::table_location`]).

use object_store::path::Path;

/// The model registry: `<root>/models/<name>/<version>/`.
pub fn models(root: &Path) -> Path {
    root.clone().join("models")
}

/// The scheduler's leases: `<root>/_sakura/jobs/leases/<job>/<fire>/`.
pub fn leases(root: &Path) -> Path {
    root.clone().join("_sakura").join("jobs").join("leases")
}

/// The schema (a directory of tables) `schema` under the root: `<root>/<schema>/`.
pub fn schema(root: &Path, schema: &str) -> Path {
    root.clone().join(schema)
}
