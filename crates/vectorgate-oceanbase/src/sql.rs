//! SQL text and value encodings, kept apart from I/O so they can be unit
//! tested.
//!
//! Only two kinds of values are ever formatted into SQL text: identifiers
//! (the validated table name and constants) and validated integers (the
//! HNSW parameters, `ef_search`, the vector dimension). Everything else is
//! a bound parameter.

use vectorgate::Metric;

/// The vector index, the scope index and the creation-time index, per table.
pub(crate) const VECTOR_INDEX: &str = "idx_vector";
pub(crate) const SCOPE_INDEX: &str = "idx_scope";
pub(crate) const CREATED_INDEX: &str = "idx_created";

/// Columns of a record, in the order `upsert` binds them.
pub(crate) const UPSERT_COLUMNS: &str =
    "id, team_id, dataset_id, collection_id, vector, vector_f32, created_at_ms, payload";
pub(crate) const UPSERT_PARAMS_PER_ROW: usize = 8;

/// Upsert statements are cut so that none carries much more than this many
/// bytes of parameters (the server's `max_allowed_packet` is 16 MiB by default).
pub(crate) const UPSERT_STATEMENT_BYTES: usize = 4 * 1024 * 1024;

/// Ids per `... id IN (...)` statement (deletes, the owner check of upserts).
pub(crate) const IDS_PER_STATEMENT: usize = 1000;

/// `CREATE TABLE IF NOT EXISTS` for the meta table.
pub(crate) fn create_meta_table(meta: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{meta}` (\
         table_name VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY, \
         dim INT NOT NULL, \
         metric VARCHAR(32) NOT NULL, \
         hnsw_m INT NOT NULL, \
         hnsw_ef_construction INT NOT NULL, \
         created_at_ms BIGINT NOT NULL)"
    )
}

/// `CREATE TABLE IF NOT EXISTS` for a vector table.
///
/// Ids and scope columns are `utf8mb4_bin`: comparisons are exact (`aa` is
/// not `AA`, which a `_ci` collation would make one primary key) and
/// `ORDER BY id` is byte order, as the other backends scan. `vector_f32`
/// holds the vector's exact little-endian `f32` bytes: OceanBase prints a
/// `VECTOR` with six significant digits, which would not give `scan` its
/// bit-exact vectors back.
pub(crate) fn create_table(table: &str, dim: u32) -> String {
    const ID: &str = "VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL";
    format!(
        "CREATE TABLE IF NOT EXISTS `{table}` (\
         id {ID} PRIMARY KEY, \
         team_id {ID}, \
         dataset_id {ID}, \
         collection_id {ID}, \
         vector VECTOR({dim}) NOT NULL, \
         vector_f32 BLOB NULL, \
         created_at_ms BIGINT NOT NULL, \
         payload JSON NULL, \
         KEY {SCOPE_INDEX} (team_id, dataset_id, collection_id), \
         KEY {CREATED_INDEX} (created_at_ms))"
    )
}

/// The `distance=` of `CREATE VECTOR INDEX`.
pub(crate) fn index_distance(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine",
        Metric::InnerProduct => "inner_product",
        Metric::L2 => "l2",
    }
}

/// `CREATE VECTOR INDEX` (HNSW, VSAG). Run only after checking that the
/// table has no vector index yet: OceanBase refuses a second one on the
/// column with error 1235, even with `IF NOT EXISTS`.
pub(crate) fn create_vector_index(
    table: &str,
    metric: Metric,
    m: u32,
    ef_construction: u32,
) -> String {
    format!(
        "CREATE VECTOR INDEX {VECTOR_INDEX} ON `{table}` (vector) WITH (distance={}, type=hnsw, lib=vsag, m={m}, ef_construction={ef_construction})",
        index_distance(metric)
    )
}

/// The distance expression recall orders by, ascending. Each form is one
/// the vector index serves: `inner_product(..) DESC` returns the right rows
/// but scans the table, `negative_inner_product(..)` ascending uses the index.
pub(crate) fn distance_expr(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine_distance(vector, ?)",
        Metric::InnerProduct => "negative_inner_product(vector, ?)",
        Metric::L2 => "l2_distance(vector, ?)",
    }
}

/// The project's score (larger is more similar) from the distance the
/// server ordered by: cosine similarity `1 - d`, the inner product `-d`,
/// the negative Euclidean distance `-d`.
pub(crate) fn score_from_distance(metric: Metric, distance: f64) -> f64 {
    match metric {
        Metric::Cosine => 1.0 - distance,
        Metric::InnerProduct | Metric::L2 => -distance,
    }
}

/// `(?, ?, ?)` with `n` placeholders.
pub(crate) fn placeholders(n: usize) -> String {
    let mut out = String::with_capacity(2 + 3 * n);
    out.push('(');
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('?');
    }
    out.push(')');
    out
}

/// Columns an upsert replaces on an existing row: every one but the id and
/// the team (a record never changes team).
const UPDATED_COLUMNS: [&str; 6] = [
    "dataset_id",
    "collection_id",
    "vector",
    "vector_f32",
    "created_at_ms",
    "payload",
];

/// The multi-row upsert for `rows` records: last write wins on every column
/// of a row the same team holds; a row another team holds is left exactly as
/// it is (`col = IF(team_id = VALUES(team_id), VALUES(col), col)`; `team_id`
/// itself is never assigned, so every `IF` sees the stored team). The caller
/// then reads the owners back ([`owners`]) and rolls back on a mismatch.
/// `VALUES()` is what seekdb (OceanBase 4.3) documents; it also accepts the
/// MySQL 8 row alias, which MySQL prefers.
pub(crate) fn upsert(table: &str, rows: usize) -> String {
    let row = placeholders(UPSERT_PARAMS_PER_ROW);
    let mut sql = format!("INSERT INTO `{table}` ({UPSERT_COLUMNS}) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&row);
    }
    sql.push_str(" ON DUPLICATE KEY UPDATE ");
    for (i, column) in UPDATED_COLUMNS.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "{column} = IF(team_id = VALUES(team_id), VALUES({column}), {column})"
        ));
    }
    sql
}

/// `id, team_id` of the rows holding `n` ids (bound in order).
pub(crate) fn owners(table: &str, n: usize) -> String {
    format!(
        "SELECT id, team_id FROM `{table}` WHERE id IN {}",
        placeholders(n)
    )
}

/// A vector as OceanBase's literal `[v1,v2,...]`, each value in the
/// shortest decimal that reads back as the same `f32` (never an exponent).
pub(crate) fn vector_literal(vector: &[f32]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(2 + vector.len() * 12);
    out.push('[');
    for (i, v) in vector.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{v}");
    }
    out.push(']');
    out
}

/// Parses the text OceanBase returns for a `VECTOR` (`[0.1,-2,3e-05]`).
pub(crate) fn parse_vector_text(bytes: &[u8]) -> Result<Vec<f32>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("vector is not UTF-8: {e}"))?;
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| format!("vector {text:?} is not in [..] form"))?;
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<f32>()
                .map_err(|e| format!("vector element {part:?}: {e}"))
        })
        .collect()
}

/// A vector as little-endian `f32` bytes (the `vector_f32` column).
pub(crate) fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Inverse of [`vector_bytes`]; `None` unless the length is `4 * dim`.
pub(crate) fn vector_from_bytes(bytes: &[u8], dim: usize) -> Option<Vec<f32>> {
    if bytes.len() != 4 * dim {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// Bytes a record adds to an upsert statement, roughly (for cutting batches).
pub(crate) fn estimated_row_bytes(dim: usize, payload_bytes: usize) -> usize {
    // Text literal (up to ~14 bytes a value), raw bytes (4), ids and overhead.
    dim * 18 + payload_bytes + 512
}

/// The health probe, one round trip: the server's version, whether it takes
/// writes from this user, whether the table exists, and the user's
/// privileges on it (user-, database- and table-level grants; roles are not
/// followed). Both `?` are the table name. About 5 ms on seekdb.
pub(crate) const HEALTH: &str = "SELECT CAST(@@version_comment AS CHAR) AS version, \
     CAST(CURRENT_USER() AS CHAR) AS user_name, \
     CAST(@@global.read_only AS SIGNED) AS read_only, \
     CAST(@@session.tx_read_only AS SIGNED) AS tx_read_only, \
     CAST((SELECT COUNT(*) FROM information_schema.tables \
           WHERE table_schema = DATABASE() AND table_name = ?) AS SIGNED) AS table_exists, \
     CAST((SELECT GROUP_CONCAT(DISTINCT p.privilege_type) FROM ( \
           SELECT privilege_type, grantee FROM information_schema.user_privileges \
           UNION ALL SELECT privilege_type, grantee FROM information_schema.schema_privileges \
             WHERE table_schema = DATABASE() \
           UNION ALL SELECT privilege_type, grantee FROM information_schema.table_privileges \
             WHERE table_schema = DATABASE() AND table_name = ?) AS p \
           WHERE p.grantee = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
                                    SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')) \
          AS CHAR) AS privileges";

/// What [`HEALTH`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServingHealth {
    pub version: String,
    pub user: String,
    pub read_only: bool,
    pub tx_read_only: bool,
    pub table_exists: bool,
    /// Comma-separated privilege names (`SELECT,INSERT,...`).
    pub privileges: String,
}

impl ServingHealth {
    /// Why the store cannot serve, with the fix; `None` when it can. A
    /// missing table is a problem only once `ensure_schema` made it.
    pub(crate) fn problem(&self, table: &str, schema_ensured: bool) -> Option<String> {
        let user = &self.user;
        let held: Vec<&str> = self.privileges.split(',').map(str::trim).collect();
        let has = |p: &str| held.contains(&p) || held.contains(&"ALL PRIVILEGES");
        if self.tx_read_only || (self.read_only && !has("SUPER")) {
            return Some(format!(
                "the server refuses writes from {user} (read_only is on): run `SET GLOBAL \
                 read_only = OFF`, or point the store's URL at the primary"
            ));
        }
        if !self.table_exists {
            return schema_ensured.then(|| {
                format!(
                    "table `{table}` is missing (dropped or renamed behind the store): rename it \
                     back, or let ensure_schema create it again and resync it from another store"
                )
            });
        }
        let missing: Vec<&str> = ["SELECT", "INSERT", "UPDATE", "DELETE"]
            .into_iter()
            .filter(|p| !has(p))
            .collect();
        if !missing.is_empty() {
            return Some(format!(
                "user {user} lacks {} on table `{table}`: run `GRANT SELECT, INSERT, UPDATE, \
                 DELETE ON <db>.{table} TO <user>`",
                missing.join(", ")
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_names_each_problem_and_its_fix() {
        let good = ServingHealth {
            version: "OceanBase".into(),
            user: "vg@%".into(),
            read_only: false,
            tx_read_only: false,
            table_exists: true,
            privileges: "USAGE,SELECT,INSERT,UPDATE,DELETE".into(),
        };
        assert_eq!(good.problem("vectors", true), None);
        // read_only does not stop a user with SUPER (root).
        let root = ServingHealth {
            read_only: true,
            privileges: "ALTER,SUPER,SELECT,INSERT,UPDATE,DELETE".into(),
            ..good.clone()
        };
        assert_eq!(root.problem("vectors", true), None);
        let cases = [
            (
                ServingHealth {
                    read_only: true,
                    ..good.clone()
                },
                "SET GLOBAL read_only = OFF",
            ),
            (
                ServingHealth {
                    tx_read_only: true,
                    ..root.clone()
                },
                "read_only is on",
            ),
            (
                ServingHealth {
                    table_exists: false,
                    ..good.clone()
                },
                "table `vectors` is missing",
            ),
            (
                ServingHealth {
                    privileges: "USAGE,SELECT".into(),
                    ..good.clone()
                },
                "user vg@% lacks INSERT, UPDATE, DELETE on table `vectors`: run `GRANT",
            ),
        ];
        for (health, expected) in cases {
            let problem = health.problem("vectors", true).unwrap_or_default();
            assert!(problem.contains(expected), "{problem:?} lacks {expected:?}");
        }
        let fresh = ServingHealth {
            table_exists: false,
            ..good
        };
        assert_eq!(fresh.problem("vectors", false), None);
    }

    #[test]
    fn literals_round_trip_bit_exactly() {
        let values = [
            0.1f32,
            -0.987_654_3,
            1e-7,
            -1e-38,
            3.402_823_5e38,
            f32::MIN_POSITIVE,
            0.0,
            -0.0,
            123_456_790.0,
            1.0 / 3.0,
        ];
        let text = vector_literal(&values);
        assert!(!text.contains('e'), "{text}");
        let back = parse_vector_text(text.as_bytes()).unwrap();
        assert_eq!(back.len(), values.len());
        for (a, b) in values.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
        }
        let bytes = vector_bytes(&values);
        let back = vector_from_bytes(&bytes, values.len()).unwrap();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(vector_from_bytes(&bytes, values.len() + 1).is_none());
    }

    #[test]
    fn parses_what_the_server_prints() {
        assert_eq!(
            parse_vector_text(b"[0.123457,-0.987654,0.0000001]").unwrap(),
            vec![0.123_457, -0.987_654, 0.000_000_1]
        );
        assert_eq!(parse_vector_text(b"[3,4,5]").unwrap(), vec![3.0, 4.0, 5.0]);
        assert_eq!(parse_vector_text(b"[1e-05, 2]").unwrap(), vec![1e-5, 2.0]);
        assert!(parse_vector_text(b"[]").unwrap().is_empty());
        assert!(parse_vector_text(b"3,4").is_err());
        assert!(parse_vector_text(b"[3,x]").is_err());
        assert!(parse_vector_text(&[b'[', 0xff, b']']).is_err());
    }

    #[test]
    fn statements_have_the_right_shape() {
        assert_eq!(placeholders(3), "(?, ?, ?)");
        let sql = upsert("t", 2);
        assert_eq!(sql.matches('?').count(), 2 * UPSERT_PARAMS_PER_ROW);
        assert!(sql.starts_with("INSERT INTO `t` (id, "), "{sql}");
        assert!(sql.contains("ON DUPLICATE KEY UPDATE"), "{sql}");
        // The team is never assigned; every other column only within the team.
        let update = sql
            .split("ON DUPLICATE KEY UPDATE")
            .nth(1)
            .unwrap_or_default();
        assert!(
            !update.trim_start().starts_with("team_id") && !update.contains(", team_id ="),
            "{sql}"
        );
        for column in UPDATED_COLUMNS {
            assert!(
                update.contains(&format!(
                    "{column} = IF(team_id = VALUES(team_id), VALUES({column}), {column})"
                )),
                "{sql}"
            );
        }
        assert_eq!(
            owners("t", 2),
            "SELECT id, team_id FROM `t` WHERE id IN (?, ?)"
        );
        let ddl = create_vector_index("t", Metric::InnerProduct, 16, 200);
        assert!(
            ddl.contains("distance=inner_product, type=hnsw, lib=vsag, m=16, ef_construction=200"),
            "{ddl}"
        );
        let table = create_table("t", 768);
        assert!(table.contains("VECTOR(768)"), "{table}");
        assert!(table.contains("utf8mb4_bin"), "{table}");
    }

    #[test]
    fn scores_follow_the_project_convention() {
        assert_eq!(score_from_distance(Metric::Cosine, 0.25), 0.75);
        assert_eq!(score_from_distance(Metric::InnerProduct, -3.0), 3.0);
        assert_eq!(score_from_distance(Metric::L2, 2.0), -2.0);
        for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
            assert!(distance_expr(metric).ends_with("(vector, ?)"));
        }
    }
}
