//! Roles: which tables a caller may read, and which rows of them, and which it may write.
//! `[roles.<name>]` in the config grants reads and writes by table pattern and attaches row
//! filters; a caller's grants are the union of its roles'. The built-in `admin` role reads
//! everything and writes every curated table.

use std::collections::BTreeMap;

use engine::Grants;
use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Identity, Result};

/// The role that may read every table, unfiltered (also every caller's role when
/// authentication is off).
pub const ADMIN: &str = "admin";

/// `[roles.<name>]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleConfig {
    /// Tables the role reads: `schema.table`, `schema.*` or `*`.
    pub read: Vec<String>,
    /// Tables the role writes (`INSERT INTO`, `CREATE TABLE … AS`), same patterns; only
    /// `curated` tables are writable at all. Writing a table implies reading it.
    pub write: Vec<String>,
    /// Row filters: `schema.table` → SQL predicate over its columns. `{claim.NAME}` stands for
    /// the caller's claim NAME as a SQL literal (a token without it reads nothing).
    pub row_filters: BTreeMap<String, String>,
}

/// Every role of the configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: BTreeMap<String, RoleConfig>,
}

use engine::pattern_matches as matches;

/// `{claim.NAME}` placeholders of `predicate` replaced by the claims as SQL literals.
fn substitute(predicate: &str, claims: &serde_json::Map<String, Value>) -> Result<String> {
    let mut out = String::with_capacity(predicate.len());
    let mut rest = predicate;
    while let Some(start) = rest.find("{claim.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{claim.".len()..];
        let end = after.find('}').ok_or_else(|| {
            Error::Config(format!("unclosed {{claim.…}} in row filter {predicate:?}"))
        })?;
        let name = &after[..end];
        let literal = match claims.get(name) {
            Some(Value::String(s)) => format!("'{}'", s.replace('\'', "''")),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => {
                return Err(Error::PermissionDenied(format!(
                    "a row filter of your role needs the token claim {name:?}, which it lacks"
                )));
            }
        };
        out.push_str(&literal);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Policy {
    /// Checks the roles: patterns and row-filter keys must be well-formed.
    pub fn new(roles: BTreeMap<String, RoleConfig>) -> Result<Self> {
        for (name, role) in &roles {
            for p in role
                .read
                .iter()
                .chain(&role.write)
                .chain(role.row_filters.keys())
            {
                if p != "*"
                    && p.split_once('.')
                        .is_none_or(|(s, t)| s.is_empty() || t.is_empty())
                {
                    return Err(Error::Config(format!(
                        "roles.{name}: {p:?} is not schema.table, schema.* or *"
                    )));
                }
            }
        }
        Ok(Self { roles })
    }

    /// What `identity` may read of `tables` (`(schema, table)` pairs): a table is readable when
    /// one of its roles grants it (reading or writing); unfiltered when one such role has no
    /// filter for it, else through the OR of those roles' filters. Plus the write patterns of
    /// its roles.
    pub fn grants(&self, identity: &Identity, tables: &[(String, String)]) -> Result<Grants> {
        let mut out = Grants::default();
        for (schema, table) in tables {
            let key = format!("{schema}.{table}");
            let mut filters = Vec::new();
            let mut unfiltered = false;
            let mut granted = false;
            for role in &identity.roles {
                if role == ADMIN {
                    granted = true;
                    unfiltered = true;
                    continue;
                }
                let Some(r) = self.roles.get(role) else {
                    continue;
                };
                if !r
                    .read
                    .iter()
                    .chain(&r.write)
                    .any(|p| matches(p, schema, table))
                {
                    continue;
                }
                granted = true;
                match r.row_filters.get(&key) {
                    Some(f) => filters.push(format!("({})", substitute(f, &identity.claims)?)),
                    None => unfiltered = true,
                }
            }
            if granted {
                let filter = (!unfiltered).then(|| filters.join(" OR "));
                out.tables.insert((schema.clone(), table.clone()), filter);
            }
        }
        for role in &identity.roles {
            if role == ADMIN {
                out.settings = true;
                out.write.push(format!("{}.*", engine::CURATED));
            } else if let Some(r) = self.roles.get(role) {
                out.write.extend(r.write.iter().cloned());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(roles: &[&str], claims: Value) -> Identity {
        Identity {
            subject: "u".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            method: "jwt",
            claims: claims.as_object().cloned().unwrap_or_default(),
            origin: crate::auth::Origin::Jwt,
            expires: None,
        }
    }

    #[test]
    fn grants_are_the_union_of_roles_with_claims_as_literals() {
        let policy = Policy::new(
            [
                (
                    "tenant".to_string(),
                    RoleConfig {
                        read: vec!["raw.events".into(), "raw.telemetry".into()],
                        row_filters: [(
                            "raw.events".to_string(),
                            "project_id = {claim.project_id}".to_string(),
                        )]
                        .into(),
                        ..Default::default()
                    },
                ),
                (
                    "ops".to_string(),
                    RoleConfig {
                        read: vec!["raw.*".into()],
                        write: vec!["curated.daily".into()],
                        row_filters: BTreeMap::new(),
                    },
                ),
            ]
            .into(),
        )
        .unwrap();
        let tables: Vec<(String, String)> = [
            ("raw", "events"),
            ("raw", "logs"),
            ("system", "ingest_ledger"),
        ]
        .iter()
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .collect();
        let tenant = identity(
            &["tenant"],
            serde_json::json!({"project_id": "p-1' OR '1'='1"}),
        );
        let g = policy.grants(&tenant, &tables).unwrap();
        assert_eq!(
            g.tables,
            [(
                ("raw".to_string(), "events".to_string()),
                Some("(project_id = 'p-1'' OR ''1''=''1')".to_string())
            )]
            .into(),
            "a claim is one quoted literal, whatever it holds"
        );
        let both = identity(&["tenant", "ops"], serde_json::json!({"project_id": "p-1"}));
        let g = policy.grants(&both, &tables).unwrap();
        assert_eq!(g.tables.len(), 2);
        assert_eq!(
            g.tables[&("raw".into(), "events".into())],
            None,
            "ops reads all rows"
        );
        assert!(g.may_write("curated", "daily") && !g.may_write("curated", "other"));
        assert!(
            !policy
                .grants(&tenant, &tables)
                .unwrap()
                .may_write("curated", "daily")
        );
        let admin = identity(&["admin"], Value::Null);
        let g = policy.grants(&admin, &tables).unwrap();
        assert_eq!(g.tables.len(), 3);
        assert!(g.may_write("curated", "anything") && !g.may_write("raw", "events"));
        let nobody = identity(&["unknown-role"], Value::Null);
        assert!(policy.grants(&nobody, &tables).unwrap().tables.is_empty());
        let no_claim = identity(&["tenant"], serde_json::json!({}));
        assert!(matches!(
            policy.grants(&no_claim, &tables),
            Err(Error::PermissionDenied(m)) if m.contains("project_id")
        ));
        assert!(
            Policy::new(
                [(
                    "x".to_string(),
                    RoleConfig {
                        read: vec!["events".into()],
                        ..Default::default()
                    }
                )]
                .into()
            )
            .is_err()
        );
    }
}
