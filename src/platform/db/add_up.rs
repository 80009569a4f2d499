//! Additive multi-row upserts: `INSERT INTO table (keys, counts) VALUES rows ON CONFLICT (keys)
//! DO UPDATE SET n = table.n + excluded.n` for every count, so that a writer adds its deltas to
//! whatever the rows already hold, on both backends.
//!
//! Every value is a bound parameter. A statement's text then depends only on its table, its
//! columns and its number of rows, and diesel's statement cache (keyed by the text) prepares each
//! one once per connection and keeps it. Rows go out in statements of a few fixed sizes, so a
//! connection keeps a few statements per table, and a writer of many rows sends few statements.
//! A statement with its values written into the text is parsed anew every time: on SQLite that
//! was about half of a counter flush's work.

use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Text};

use super::{DbConnection, MultiBackend};

/// The sizes of the statements, largest first: rows go out in statements of the largest size
/// that what is left fills (at most 12 statements beyond the full ones; 256 rows of nine
/// values stay far below either backend's limit on parameters).
pub const STATEMENT_ROWS: [usize; 5] = [256, 64, 16, 4, 1];

/// Values bound, in order and separated by commas, into the statement being written.
pub trait Bind {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, MultiBackend>) -> QueryResult<()>;
}

impl Bind for i64 {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        out.push_bind_param::<BigInt, _>(self)
    }
}

impl Bind for &str {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        out.push_bind_param::<Text, _>(*self)
    }
}

impl<const N: usize> Bind for [i64; N] {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        for (i, value) in self.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            value.bind(out)?;
        }
        Ok(())
    }
}

impl<A: Bind, B: Bind> Bind for (A, B) {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        self.0.bind(out)?;
        out.push_sql(", ");
        self.1.bind(out)
    }
}

impl<A: Bind, B: Bind, C: Bind> Bind for (A, B, C) {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        self.0.bind(out)?;
        out.push_sql(", ");
        self.1.bind(out)?;
        out.push_sql(", ");
        self.2.bind(out)
    }
}

/// A table's columns: the key's, then the counts' that rows add to.
#[derive(Debug, Clone, Copy)]
pub struct Columns {
    pub table: &'static str,
    pub keys: &'static [&'static str],
    pub counts: &'static [&'static str],
}

/// One statement: `rows`, each its key's values and then its counts.
struct AddUp<'a, K, C> {
    columns: Columns,
    rows: &'a [(K, C)],
}

/// Not a static query id: the statement cache keys it by its text, one per table and size.
impl<K, C> QueryId for AddUp<'_, K, C> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<K: Bind, C: Bind> QueryFragment<MultiBackend> for AddUp<'_, K, C> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        let Columns {
            table,
            keys,
            counts,
        } = self.columns;
        let list = |out: &mut AstPass<'_, 'b, MultiBackend>, names: &[&'static str]| {
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.push_sql(", ");
                }
                out.push_sql(name);
            }
        };
        out.push_sql("INSERT INTO ");
        out.push_sql(table);
        out.push_sql(" (");
        list(&mut out, keys);
        out.push_sql(", ");
        list(&mut out, counts);
        out.push_sql(") VALUES ");
        for (i, row) in self.rows.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            row.bind(&mut out)?;
            out.push_sql(")");
        }
        out.push_sql(" ON CONFLICT (");
        list(&mut out, keys);
        out.push_sql(") DO UPDATE SET ");
        for (i, count) in counts.iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            for part in [
                comma,
                count,
                " = ",
                table,
                ".",
                count,
                " + excluded.",
                count,
            ] {
                out.push_sql(part);
            }
        }
        Ok(())
    }
}

impl<K, C, Conn> RunQueryDsl<Conn> for AddUp<'_, K, C> {}

/// How `n` rows split into statements of [`STATEMENT_ROWS`] sizes, in order.
fn statement_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let size = STATEMENT_ROWS.into_iter().find(|size| *size <= n)?;
        n -= size;
        Some(size)
    })
}

/// Adds each row's counts to the stored ones (a new key starts from them), in the rows' order.
/// Rows are taken from `rows` a full statement at a time, so a caller that sums them lazily
/// holds no more than one statement's sums. Each key must appear once (PostgreSQL refuses a
/// statement that updates one row twice).
pub fn add_up<K: Bind, C: Bind>(
    conn: &mut DbConnection,
    columns: Columns,
    mut rows: impl Iterator<Item = (K, C)>,
) -> QueryResult<()> {
    let mut chunk = Vec::with_capacity(STATEMENT_ROWS[0]);
    loop {
        chunk.extend(rows.by_ref().take(STATEMENT_ROWS[0]));
        let mut rest = chunk.as_slice();
        for size in statement_sizes(chunk.len()) {
            let (statement, after) = rest.split_at(size);
            AddUp {
                columns,
                rows: statement,
            }
            .execute(conn)?;
            rest = after;
        }
        if chunk.len() < STATEMENT_ROWS[0] {
            return Ok(());
        }
        chunk.clear();
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::platform::db::{Db, DbError};

    #[test]
    fn rows_go_out_in_the_fewest_statements_of_the_cached_sizes() {
        let sizes = |n| statement_sizes(n).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(7), [4, 1, 1, 1]);
        assert_eq!(sizes(256), [256]);
        assert_eq!(sizes(255), [64, 64, 64, 16, 16, 16, 4, 4, 4, 1, 1, 1]);
        assert!((0..=256).all(|n| statement_sizes(n).sum::<usize>() == n));
    }

    #[tokio::test]
    async fn every_row_adds_to_its_key_whatever_the_statements_it_went_out_in() {
        let (_dir, db) = Db::temporary();
        let columns = Columns {
            table: "sums",
            keys: &["id", "name"],
            counts: &["a", "b"],
        };
        let rows = |n: i64, by: i64| {
            (0..n).map(move |i| ((i, if i % 2 == 0 { "it's" } else { "x" }), [by, i * by]))
        };
        let sums = db
            .run(move |conn| {
                diesel::sql_query(
                    "CREATE TABLE sums (id BIGINT NOT NULL, name TEXT NOT NULL, \
                     a BIGINT NOT NULL, b BIGINT NOT NULL, PRIMARY KEY (id, name))",
                )
                .execute(conn)?;
                // 600 rows (256, 256, 64, 16, 4, 4), then 7 of them again (4, 1, 1, 1).
                add_up(conn, columns, rows(600, 1))?;
                add_up(conn, columns, rows(7, 10))?;
                #[derive(QueryableByName)]
                struct Sum {
                    #[diesel(sql_type = BigInt)]
                    n: i64,
                    #[diesel(sql_type = BigInt)]
                    a: i64,
                    #[diesel(sql_type = BigInt)]
                    b: i64,
                    #[diesel(sql_type = BigInt)]
                    quoted: i64,
                }
                let sum = diesel::sql_query(
                    "SELECT COUNT(*) AS n, SUM(a) AS a, SUM(b) AS b, \
                     SUM(CASE WHEN name = 'it''s' THEN 1 ELSE 0 END) AS quoted FROM sums",
                )
                .get_result::<Sum>(conn)?;
                Ok::<_, DbError>((sum.n, sum.a, sum.b, sum.quoted))
            })
            .await
            .expect("written");
        let b = (0..600).sum::<i64>() + 10 * (0..7).sum::<i64>();
        assert_eq!(sums, (600, 600 + 7 * 10, b, 300));
    }
}
