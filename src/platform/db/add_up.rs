//! Additive multi-row upserts: `INSERT INTO table (keys, counts) VALUES rows ON CONFLICT (keys)
//! DO UPDATE SET n = table.n + excluded.n` for every count, so that a writer adds its deltas to
//! whatever the rows already hold, on both backends.
//!
//! Rows go out in statements of a few fixed sizes. On PostgreSQL every value is a bound
//! parameter: a statement's text then depends only on its table, its columns and its number of
//! rows, and diesel's statement cache (keyed by the text) prepares each one once per connection,
//! so the server parses and plans no statement twice (a report's flush of 100 000 rows took the
//! database server about half the CPU that statements with their values written in did).
//! On SQLite the values are written into the statement's text, numbers as digits and text
//! quoted: SQLite parses a statement in-process and cheaply, and binding the same rows one value
//! at a time (a library call under SQLite's connection mutex each) cost more than the parse
//! (bench/RESULTS.md, "Counter flushes: bound statements for PostgreSQL").

use std::fmt::Write as _;

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Text};

use super::{DbConnection, write_sql_text};

/// The sizes of the statements, largest first: rows go out in statements of the largest size
/// that what is left fills (at most 12 statements beyond the full ones; 256 rows of nine
/// values stay far below either backend's limit on parameters).
pub const STATEMENT_ROWS: [usize; 5] = [256, 64, 16, 4, 1];

/// Values in a row, in order and separated by commas: bound into a PostgreSQL statement, or
/// written into an SQLite statement's text.
pub trait Bind {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
    fn write(&self, sql: &mut String);
}

impl Bind for i64 {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<BigInt, _>(self)
    }

    fn write(&self, sql: &mut String) {
        let _ = write!(sql, "{self}");
    }
}

impl Bind for &str {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<Text, _>(*self)
    }

    fn write(&self, sql: &mut String) {
        write_sql_text(sql, self);
    }
}

impl<const N: usize> Bind for [i64; N] {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        for (i, value) in self.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            value.bind(out)?;
        }
        Ok(())
    }

    fn write(&self, sql: &mut String) {
        for (i, value) in self.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            value.write(sql);
        }
    }
}

impl<A: Bind, B: Bind> Bind for (A, B) {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.bind(out)?;
        out.push_sql(", ");
        self.1.bind(out)
    }

    fn write(&self, sql: &mut String) {
        self.0.write(sql);
        sql.push_str(", ");
        self.1.write(sql);
    }
}

impl<A: Bind, B: Bind, C: Bind> Bind for (A, B, C) {
    fn bind<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.bind(out)?;
        out.push_sql(", ");
        self.1.bind(out)?;
        out.push_sql(", ");
        self.2.bind(out)
    }

    fn write(&self, sql: &mut String) {
        self.0.write(sql);
        sql.push_str(", ");
        self.1.write(sql);
        sql.push_str(", ");
        self.2.write(sql);
    }
}

/// A table's columns: the key's, then the counts' that rows add to.
#[derive(Debug, Clone, Copy)]
pub struct Columns {
    pub table: &'static str,
    pub keys: &'static [&'static str],
    pub counts: &'static [&'static str],
}

impl Columns {
    /// The statement's text around its rows, the same for every statement of a call:
    /// `INSERT INTO table (columns) VALUES ` and
    /// ` ON CONFLICT (keys) DO UPDATE SET n = table.n + excluded.n, ...`.
    fn frame(&self) -> (String, String) {
        let (table, keys) = (self.table, self.keys.join(", "));
        let head = format!(
            "INSERT INTO {table} ({keys}, {}) VALUES ",
            self.counts.join(", ")
        );
        let mut tail = format!(" ON CONFLICT ({keys}) DO UPDATE SET ");
        for (i, count) in self.counts.iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            let _ = write!(tail, "{comma}{count} = {table}.{count} + excluded.{count}");
        }
        (head, tail)
    }
}

/// One PostgreSQL statement: `rows`, each its key's values and then its counts, all bound,
/// between the text of [`Columns::frame`].
struct AddUp<'a, K, C> {
    head: &'a str,
    tail: &'a str,
    rows: &'a [(K, C)],
}

/// Not a static query id: the statement cache keys it by its text, one per table and size.
impl<K, C> QueryId for AddUp<'_, K, C> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<K: Bind, C: Bind> QueryFragment<Pg> for AddUp<'_, K, C> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(self.head);
        for (i, row) in self.rows.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            row.bind(&mut out)?;
            out.push_sql(")");
        }
        out.push_sql(self.tail);
        Ok(())
    }
}

impl<K, C, Conn> RunQueryDsl<Conn> for AddUp<'_, K, C> {}

/// One SQLite statement: `rows` written into its text, between `head` and `tail`
/// ([`Columns::frame`]).
fn literal_statement<K: Bind, C: Bind>(head: &str, tail: &str, rows: &[(K, C)]) -> String {
    let mut sql = String::with_capacity(head.len() + tail.len() + rows.len() * 64);
    sql.push_str(head);
    for (i, row) in rows.iter().enumerate() {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        row.write(&mut sql);
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// How `n` rows split into statements of [`STATEMENT_ROWS`] sizes, in order.
fn statement_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let size = STATEMENT_ROWS.into_iter().find(|size| *size <= n)?;
        n -= size;
        Some(size)
    })
}

/// Rows sorted by key, each run of equal keys one row: its first value made a sum by `first`,
/// the others added to it by `add`. In this order an [`add_up`] statement updates no row twice,
/// walks the key's index from one end to the other, and two instances adding to the same rows take
/// their row locks in the same order (PostgreSQL), so neither waits on the other in a cycle.
/// Each sum is made as the iterator reaches it.
pub fn sum_by_key<K: Ord, V, S>(
    mut rows: Vec<(K, V)>,
    first: impl Fn(V) -> S,
    add: impl Fn(&mut S, V),
) -> impl Iterator<Item = (K, S)> {
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut rows = rows.into_iter().peekable();
    std::iter::from_fn(move || {
        let (key, value) = rows.next()?;
        let mut sum = first(value);
        while let Some((_, more)) = rows.next_if(|(next, _)| *next == key) {
            add(&mut sum, more);
        }
        Some((key, sum))
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
    let (head, tail) = columns.frame();
    let mut chunk = Vec::with_capacity(STATEMENT_ROWS[0]);
    loop {
        chunk.extend(rows.by_ref().take(STATEMENT_ROWS[0]));
        match conn {
            DbConnection::Postgresql(conn) => {
                let mut rest = chunk.as_slice();
                for size in statement_sizes(chunk.len()) {
                    let (statement, after) = rest.split_at(size);
                    AddUp {
                        head: &head,
                        tail: &tail,
                        rows: statement,
                    }
                    .execute(conn)?;
                    rest = after;
                }
            }
            // Text is parsed whatever its size: one statement for the chunk.
            DbConnection::Sqlite(conn) if !chunk.is_empty() => {
                diesel::sql_query(literal_statement(&head, &tail, &chunk)).execute(conn)?;
            }
            DbConnection::Sqlite(_) => {}
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use diesel::connection::{InstrumentationEvent, SimpleConnection};

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

    #[test]
    fn rows_come_out_in_key_order_with_each_run_of_equal_keys_summed_once() {
        let rows = vec![
            ((2, "b"), 5),
            ((1, "z"), 1),
            ((2, "b"), 7),
            ((1, "a"), 3),
            ((2, "b"), 1),
        ];
        let made = AtomicUsize::new(0);
        // The values of a run, in whatever order the sort left them.
        let sums: Vec<_> = sum_by_key(
            rows,
            |first| {
                made.fetch_add(1, Ordering::Relaxed);
                vec![first]
            },
            |sum, more| sum.push(more),
        )
        .map(|(key, mut values)| {
            values.sort_unstable();
            (key, values)
        })
        .collect();
        assert_eq!(
            sums,
            [
                ((1, "a"), vec![3]),
                ((1, "z"), vec![1]),
                ((2, "b"), vec![1, 5, 7])
            ]
        );
        assert_eq!(made.load(Ordering::Relaxed), 3);
        assert_eq!(
            sum_by_key(Vec::<(u8, u8)>::new(), |v| v, |_, _| ()).count(),
            0
        );
    }

    #[test]
    fn an_sqlite_statement_writes_each_row_with_its_key_and_counts_in_order() {
        let columns = Columns {
            table: "t",
            keys: &["a", "b"],
            counts: &["x", "y"],
        };
        let rows = [((7, "it's"), [1, i64::MAX]), ((8, "b"), [0, 0])];
        assert_eq!(
            {
                let (head, tail) = columns.frame();
                literal_statement(&head, &tail, &rows)
            },
            format!(
                "INSERT INTO t (a, b, x, y) VALUES (7, 'it''s', 1, {}), (8, 'b', 0, 0) \
                 ON CONFLICT (a, b) DO UPDATE SET x = t.x + excluded.x, y = t.y + excluded.y",
                i64::MAX
            )
        );
    }

    const SUMS: Columns = Columns {
        table: "sums",
        keys: &["id", "name"],
        counts: &["a", "b"],
    };

    fn rows(n: i64, by: i64) -> impl Iterator<Item = ((i64, &'static str), [i64; 2])> {
        (0..n).map(move |i| ((i, if i % 2 == 0 { "it's" } else { "x" }), [by, i * by]))
    }

    /// 600 rows, then 7 of them again; what the table holds after.
    fn add_twice_and_sum(conn: &mut DbConnection) -> (i64, i64, i64, i64) {
        conn.batch_execute(
            "CREATE TEMPORARY TABLE sums (id BIGINT NOT NULL, name TEXT NOT NULL, \
             a BIGINT NOT NULL, b BIGINT NOT NULL, PRIMARY KEY (id, name))",
        )
        .expect("created");
        add_up(conn, SUMS, rows(600, 1)).expect("600 rows");
        add_up(conn, SUMS, rows(7, 10)).expect("7 rows again");
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
            "SELECT COUNT(*) AS n, CAST(SUM(a) AS BIGINT) AS a, CAST(SUM(b) AS BIGINT) AS b, \
             CAST(SUM(CASE WHEN name = 'it''s' THEN 1 ELSE 0 END) AS BIGINT) AS quoted FROM sums",
        )
        .get_result::<Sum>(conn)
        .expect("summed");
        (sum.n, sum.a, sum.b, sum.quoted)
    }

    fn expected_sums() -> (i64, i64, i64, i64) {
        let b = (0..600).sum::<i64>() + 10 * (0..7).sum::<i64>();
        (600, 600 + 7 * 10, b, 300)
    }

    #[tokio::test]
    async fn every_row_adds_to_its_key_on_sqlite() {
        let (_dir, db) = Db::temporary();
        let sums = db
            .run(|conn| Ok::<_, DbError>(add_twice_and_sum(conn)))
            .await
            .expect("written");
        assert_eq!(sums, expected_sums());
    }

    /// Runs where the tests' PostgreSQL is configured (`REKLAMA_TEST_DATABASE=postgres`), in a
    /// temporary table of its own session.
    #[test]
    fn every_row_adds_to_its_key_on_postgresql_through_statements_prepared_once() {
        if std::env::var("REKLAMA_TEST_DATABASE").as_deref() != Ok("postgres") {
            return;
        }
        let base = std::env::var("REKLAMA_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let pg = diesel::PgConnection::establish(&format!("{base}/postgres")).expect("connected");
        let mut conn = DbConnection::Postgresql(pg);
        let cached = Arc::new(AtomicUsize::new(0));
        let counter = cached.clone();
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::CacheQuery { .. } = event {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        assert_eq!(add_twice_and_sum(&mut conn), expected_sums());
        // 600 rows went out as 256, 256, 64, 16, 4, 4 and 7 as 4, 1, 1, 1: five statements
        // prepared and kept, each used again from the cache.
        assert_eq!(cached.load(Ordering::SeqCst), 5);
    }
}
