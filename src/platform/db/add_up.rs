//! Additive multi-row upserts: `INSERT INTO table (keys, counts) VALUES rows ON CONFLICT (keys)
//! DO UPDATE SET n = table.n + excluded.n` for every count, so that a writer adds its deltas to
//! whatever the rows already hold, on both backends.
//!
//! Rows go out in statements of a few fixed sizes, every value a bound parameter. A statement is
//! then a type of its own, [`Table`] and size, and diesel's statement cache keys it by that
//! type: each one is prepared once per connection and run again with new values, without its
//! text being written, hashed or parsed again. On PostgreSQL the server then parses and plans
//! no statement twice (a report's flush of 100 000 rows took the database server about half the
//! CPU that statements with their values written in did); on SQLite, which parses in-process,
//! a flushed row holds the writer about 40 % less long under load than written into the text
//! (bench/RESULTS.md, "Counter flushes on SQLite: bound values in statements prepared once").

use std::fmt::Write as _;
use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Text};

use super::DbConnection;

/// The rows of the largest statement: 256 rows of nine values stay far below either backend's
/// limit on parameters.
const FULL: usize = 256;

/// A table that rows add up into: its name, its key's columns and the counts' columns that rows
/// add to. A type of its own for each table, so that its statements are too; rows added to one
/// table are always of one type (a statement is prepared for the types of the first it took).
pub trait Table: 'static {
    const NAME: &'static str;
    const KEYS: &'static [&'static str];
    const COUNTS: &'static [&'static str];
}

/// A backend's bind parameters for the two types of value a row holds.
pub trait Binds: Backend {
    fn int<'b>(out: &mut AstPass<'_, 'b, Self>, value: &'b i64) -> QueryResult<()>;
    fn text<'b>(out: &mut AstPass<'_, 'b, Self>, value: &'b str) -> QueryResult<()>;
}

impl<DB> Binds for DB
where
    DB: Backend + HasSqlType<BigInt> + HasSqlType<Text>,
    i64: ToSql<BigInt, DB>,
    str: ToSql<Text, DB>,
{
    fn int<'b>(out: &mut AstPass<'_, 'b, Self>, value: &'b i64) -> QueryResult<()> {
        out.push_bind_param::<BigInt, _>(value)
    }

    fn text<'b>(out: &mut AstPass<'_, 'b, Self>, value: &'b str) -> QueryResult<()> {
        out.push_bind_param::<Text, _>(value)
    }
}

/// Values in a row, in order and separated by commas, each a bound parameter.
pub trait Bind {
    fn bind<'b, DB: Binds>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()>;
}

impl Bind for i64 {
    fn bind<'b, DB: Binds>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()> {
        DB::int(out, self)
    }
}

impl Bind for &str {
    fn bind<'b, DB: Binds>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()> {
        DB::text(out, self)
    }
}

impl<const N: usize> Bind for [i64; N] {
    fn bind<'b, DB: Binds>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()> {
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
    fn bind<'b, DB: Binds>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.bind(out)?;
        out.push_sql(", ");
        self.1.bind(out)
    }
}

impl<A: Bind, B: Bind, C: Bind> Bind for (A, B, C) {
    fn bind<'b, DB: Binds>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.bind(out)?;
        out.push_sql(", ");
        self.1.bind(out)?;
        out.push_sql(", ");
        self.2.bind(out)
    }
}

/// The statement's text around its rows, the same for every statement of a table:
/// `INSERT INTO table (columns) VALUES ` and
/// ` ON CONFLICT (keys) DO UPDATE SET n = table.n + excluded.n, ...`.
struct Frame {
    head: String,
    tail: String,
}

impl Frame {
    fn of<T: Table>() -> Self {
        let (table, keys) = (T::NAME, T::KEYS.join(", "));
        let head = format!(
            "INSERT INTO {table} ({keys}, {}) VALUES ",
            T::COUNTS.join(", ")
        );
        let mut tail = format!(" ON CONFLICT ({keys}) DO UPDATE SET ");
        for (i, count) in T::COUNTS.iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            let _ = write!(tail, "{comma}{count} = {table}.{count} + excluded.{count}");
        }
        Self { head, tail }
    }
}

/// One statement of `N` rows into table `T`, each row its key's values and then its counts,
/// all bound, in the text of its [`Frame`].
struct AddUp<'a, T, K, C, const N: usize> {
    frame: &'a Frame,
    rows: &'a [(K, C); N],
    table: PhantomData<T>,
}

/// What identifies an [`AddUp`] statement's text: its table and its number of rows.
struct Statement<T, const N: usize>(PhantomData<T>);

/// A static query id: the statement cache finds a prepared statement by its type, without
/// writing its text.
impl<T: Table, K, C, const N: usize> QueryId for AddUp<'_, T, K, C, N> {
    type QueryId = Statement<T, N>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<DB: Binds, T, K: Bind, C: Bind, const N: usize> QueryFragment<DB> for AddUp<'_, T, K, C, N> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(&self.frame.head);
        for (i, row) in self.rows.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            row.bind(&mut out)?;
            out.push_sql(")");
        }
        out.push_sql(&self.frame.tail);
        Ok(())
    }
}

impl<T, K, C, Conn, const N: usize> RunQueryDsl<Conn> for AddUp<'_, T, K, C, N> {}

impl<T: Table, K: Bind, C: Bind, const N: usize> AddUp<'_, T, K, C, N> {
    /// Runs statements of `N` rows for as long as `rows` fills them, leaving the rest there.
    fn run_while_full(
        conn: &mut DbConnection,
        frame: &Frame,
        rows: &mut &[(K, C)],
    ) -> QueryResult<()> {
        while let Some((statement, rest)) = rows.split_first_chunk::<N>() {
            let statement = AddUp::<T, K, C, N> {
                frame,
                rows: statement,
                table: PhantomData,
            };
            match conn {
                DbConnection::Postgresql(conn) => statement.execute(conn)?,
                DbConnection::Sqlite(conn) => statement.execute(conn)?,
            };
            *rows = rest;
        }
        Ok(())
    }
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

/// Adds each row's counts to table `T`'s (a new key starts from them), in the rows' order.
/// Rows are taken from `rows` a full statement at a time, so a caller that sums them lazily
/// holds no more than one statement's sums. Each key must appear once (PostgreSQL refuses a
/// statement that updates one row twice).
pub fn add_up<T: Table, K: Bind, C: Bind>(
    conn: &mut DbConnection,
    mut rows: impl Iterator<Item = (K, C)>,
) -> QueryResult<()> {
    let frame = Frame::of::<T>();
    let mut chunk = Vec::with_capacity(FULL);
    loop {
        chunk.extend(rows.by_ref().take(FULL));
        // Statements of 256, 64, 16, 4 and 1 rows, each of the largest size that what is left
        // fills: at most 12 beyond the full ones. Each size of each table is one statement kept
        // prepared by every connection that ran it (about 150 KB of SQLite's memory for 256 rows
        // of eight values).
        let mut rest = chunk.as_slice();
        AddUp::<T, K, C, FULL>::run_while_full(conn, &frame, &mut rest)?;
        AddUp::<T, K, C, 64>::run_while_full(conn, &frame, &mut rest)?;
        AddUp::<T, K, C, 16>::run_while_full(conn, &frame, &mut rest)?;
        AddUp::<T, K, C, 4>::run_while_full(conn, &frame, &mut rest)?;
        AddUp::<T, K, C, 1>::run_while_full(conn, &frame, &mut rest)?;
        if chunk.len() < FULL {
            return Ok(());
        }
        chunk.clear();
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use diesel::connection::{InstrumentationEvent, SimpleConnection};

    use super::*;
    use crate::platform::db::{Db, test_postgres_server};

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

    struct Sums;

    impl Table for Sums {
        const NAME: &'static str = "sums";
        const KEYS: &'static [&'static str] = &["id", "name"];
        const COUNTS: &'static [&'static str] = &["a", "b"];
    }

    /// A table of the same columns and row types as [`Sums`]: its statements differ only by name.
    struct OtherSums;

    impl Table for OtherSums {
        const NAME: &'static str = "other_sums";
        const KEYS: &'static [&'static str] = Sums::KEYS;
        const COUNTS: &'static [&'static str] = Sums::COUNTS;
    }

    fn rows(n: i64, by: i64) -> impl Iterator<Item = ((i64, &'static str), [i64; 2])> {
        (0..n).map(move |i| ((i, if i % 2 == 0 { "it's" } else { "x" }), [by, i * by]))
    }

    /// What a table holds: its rows, the sums of `a` and `b`, and the rows named `it's`.
    fn sum_of(conn: &mut DbConnection, table: &str) -> (i64, i64, i64, i64) {
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
        let sum = diesel::sql_query(format!(
            "SELECT COUNT(*) AS n, CAST(SUM(a) AS BIGINT) AS a, CAST(SUM(b) AS BIGINT) AS b, \
             CAST(SUM(CASE WHEN name = 'it''s' THEN 1 ELSE 0 END) AS BIGINT) AS quoted FROM {table}"
        ))
        .get_result::<Sum>(conn)
        .expect("summed");
        (sum.n, sum.a, sum.b, sum.quoted)
    }

    /// Adds 600 rows to `sums`, then 7 of them again, then 5 rows to `other_sums`, watching the
    /// statements run: each table holds its own rows, every statement was of one of the five
    /// sizes, and each size of each table was prepared once.
    fn add_up_and_watch(conn: &mut DbConnection) {
        conn.batch_execute(
            "CREATE TEMPORARY TABLE sums (id BIGINT NOT NULL, name TEXT NOT NULL, \
             a BIGINT NOT NULL, b BIGINT NOT NULL, PRIMARY KEY (id, name)); \
             CREATE TEMPORARY TABLE other_sums (id BIGINT NOT NULL, name TEXT NOT NULL, \
             a BIGINT NOT NULL, b BIGINT NOT NULL, PRIMARY KEY (id, name))",
        )
        .expect("created");
        let prepared = Arc::new(AtomicUsize::new(0));
        // The number of rows of each statement run, in order.
        let run = Arc::new(Mutex::new(Vec::new()));
        let (counter, sizes) = (prepared.clone(), run.clone());
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| match event {
            InstrumentationEvent::CacheQuery { .. } => {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            InstrumentationEvent::StartQuery { query, .. } => {
                let sql = query.to_string();
                if sql.starts_with("INSERT INTO") {
                    let rows = sql.matches("), (").count() + 1;
                    sizes.lock().expect("not poisoned").push(rows);
                }
            }
            _ => {}
        });
        add_up::<Sums, _, _>(conn, rows(600, 1)).expect("600 rows");
        add_up::<Sums, _, _>(conn, rows(7, 10)).expect("7 rows again");
        add_up::<OtherSums, _, _>(conn, rows(5, 100)).expect("5 rows elsewhere");
        let b = (0..600).sum::<i64>() + 10 * (0..7).sum::<i64>();
        assert_eq!(sum_of(conn, "sums"), (600, 600 + 7 * 10, b, 300));
        let b = 100 * (0..5).sum::<i64>();
        assert_eq!(sum_of(conn, "other_sums"), (5, 500, b, 3));
        assert_eq!(
            *run.lock().expect("not poisoned"),
            [256, 256, 64, 16, 4, 4, 4, 1, 1, 1, 4, 1]
        );
        // Sums: the five sizes; other_sums: its own statements of 4 rows and of 1.
        assert_eq!(prepared.load(Ordering::SeqCst), 7);
    }

    #[tokio::test]
    async fn every_row_adds_to_its_key_on_sqlite_through_statements_prepared_once() {
        let (_dir, db) = Db::temporary();
        db.run(|conn| {
            add_up_and_watch(conn);
            Ok::<_, crate::platform::db::DbError>(())
        })
        .await
        .expect("written");
    }

    /// Runs where the tests' PostgreSQL is configured (`REKLAMA_TEST_DATABASE=postgres`), in
    /// temporary tables of its own session.
    #[test]
    fn every_row_adds_to_its_key_on_postgresql_through_statements_prepared_once() {
        let Some(base) = test_postgres_server() else {
            return;
        };
        let pg = diesel::PgConnection::establish(&format!("{base}/postgres")).expect("connected");
        add_up_and_watch(&mut DbConnection::Postgresql(pg));
    }
}
