//! Customer accounts and their API keys. A customer has one or more keys, each `read` or
//! `write`; a key is shown once, only its SHA-256 is stored, looked up by its public key id and
//! compared in constant time. Handlers take [`Customer`] as an extractor (any live key) or
//! [`WriteCustomer`] (a write key; a read key is refused 403 `insufficient_scope`). A customer
//! also has a [`Contact`]: its e-mail address and the report e-mail it chose.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};
use diesel::prelude::*;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::domain::CustomerId;
use crate::platform::db::schema::{api_keys, customers, sessions};
use crate::platform::db::{self, Db, DbConnection, DbError, now_ms};
use crate::platform::http::{FieldError, HttpError};
use crate::platform::limits::{KeyBudget, rate_limited};
use crate::platform::tokens::{is_base62, random_base62, sha256_hex};

const KEY_PREFIX: &str = "rk_";
const KEY_ID_LEN: usize = 12;
/// 32 base62 characters: about 190 bits of secret.
const KEY_SECRET_LEN: usize = 32;
/// A key's `last_used_at` is written at most this often, so authenticated requests do not each
/// write to the database.
const LAST_USED_EVERY_MS: i64 = 60_000;
/// Live keys a customer may hold at once.
pub const MAX_KEYS: i64 = 50;
/// The longest key name, in characters.
pub const MAX_KEY_NAME: usize = 60;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET adverts, their variants, creatives and full records, reports and keys; nothing else.
    Read,
    /// Everything the API and the dashboard offer.
    Write,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Read, Scope::Write];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    /// Exactly `read` or `write`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The accepted values, as an error's `allowed`.
    pub fn allowed() -> Vec<String> {
        Self::ALL.iter().map(|s| s.as_str().to_owned()).collect()
    }
}

/// An authenticated customer, and the key it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: CustomerId,
    pub name: String,
    /// The public id of the key (the `rk_<id>` part).
    pub key_id: String,
    pub scope: Scope,
}

impl Customer {
    /// Whether the key may change anything.
    pub fn may_write(&self) -> bool {
        self.scope == Scope::Write
    }
}

/// A freshly created key, the only moment its secret exists outside the customer's hands.
#[derive(Debug)]
pub struct IssuedKey {
    pub customer: Customer,
    pub key: String,
    pub info: KeyInfo,
}

/// A live key as its owner sees it: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The public id.
    pub key_id: String,
    pub scope: Scope,
    pub name: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds, to the minute.
    pub last_used_at: Option<i64>,
}

/// Which report e-mail a customer wants (`customers.report_email`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportEmail {
    /// None (the default).
    #[default]
    Off,
    Daily,
    Weekly,
}

impl ReportEmail {
    pub const ALL: [ReportEmail; 3] = [ReportEmail::Off, ReportEmail::Daily, ReportEmail::Weekly];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportEmail::Off => "off",
            ReportEmail::Daily => "daily",
            ReportEmail::Weekly => "weekly",
        }
    }

    /// Exactly `off`, `daily` or `weekly`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn allowed() -> Vec<String> {
        Self::ALL.iter().map(|r| r.as_str().to_owned()).collect()
    }
}

/// Where a customer is told things: its e-mail address (none: no e-mail at all) and the report
/// e-mail it chose. What alerts and reports read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    pub email: Option<String>,
    pub report: ReportEmail,
}

/// A change of [`Contact`]: `None` leaves that part as it is; `email: Some(None)` removes the
/// address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactChange {
    pub email: Option<Option<String>>,
    pub report: Option<ReportEmail>,
}

/// An e-mail address as a form or the command line gives it, checked as
/// [`crate::platform::mail::parse_address`] does and named `field`; empty removes it.
pub fn email_field(field: &str, raw: &str) -> Result<Option<String>, FieldError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    crate::platform::mail::parse_address(raw)
        .map(|a| Some(a.to_string()))
        .map_err(|message| FieldError::new(field, "invalid", message))
}

/// A report choice named `field`: `off`, `daily` or `weekly`.
pub fn report_field(field: &str, raw: &str) -> Result<ReportEmail, FieldError> {
    ReportEmail::parse(raw.trim()).ok_or_else(|| FieldError {
        allowed: Some(ReportEmail::allowed()),
        ..FieldError::new(field, "invalid", "must be off, daily or weekly")
    })
}

struct ParsedKey<'a> {
    key_id: &'a str,
}

fn parse_key(key: &str) -> Option<ParsedKey<'_>> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    (key_id.len() == KEY_ID_LEN
        && secret.len() == KEY_SECRET_LEN
        && is_base62(key_id)
        && is_base62(secret))
    .then_some(ParsedKey { key_id })
}

/// A key id of the right shape (anything else names no key).
pub fn is_key_id(text: &str) -> bool {
    text.len() == KEY_ID_LEN && is_base62(text)
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing, malformed, unknown or revoked API key")]
    Rejected,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<AuthError> for HttpError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Rejected => HttpError::unauthorized(
                "a valid API key is required: send Authorization: Bearer rk_...",
            ),
            AuthError::Db(DbError::Unavailable(_)) => HttpError::unavailable(),
            AuthError::Db(other) => crate::platform::http::log_internal(&other),
        }
    }
}

/// Why a key could not be added or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no such key among yours")]
    NotFound,
    #[error("no active customer named or numbered {0:?}")]
    NoSuchCustomer(String),
    #[error("several active customers are named {0:?}: name the customer by its id")]
    Ambiguous(String),
    #[error(
        "this is your last write key: create another write key first, so that you can still \
         manage your account"
    )]
    LastWriteKey,
    #[error("you already have {MAX_KEYS} keys: revoke one you no longer use first")]
    TooManyKeys,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for KeyError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<KeyError> for HttpError {
    fn from(e: KeyError) -> Self {
        let message = e.to_string();
        match e {
            KeyError::NotFound | KeyError::NoSuchCustomer(_) | KeyError::Ambiguous(_) => {
                HttpError::not_found(message)
            }
            KeyError::LastWriteKey => {
                HttpError::new(StatusCode::CONFLICT, "last_write_key", message)
            }
            KeyError::TooManyKeys => HttpError::new(StatusCode::CONFLICT, "too_many_keys", message),
            KeyError::Db(DbError::Unavailable(_)) => HttpError::unavailable(),
            KeyError::Db(other) => crate::platform::http::log_internal(&other),
        }
    }
}

/// 403 `insufficient_scope`: a read key asked to change something.
pub fn insufficient_scope() -> HttpError {
    HttpError::new(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        "this API key is a read key: it may read adverts, variants and reports but not change \
         anything; use a write key",
    )
}

/// The `scope` of a new key: exactly `read` or `write`.
pub fn scope_field(raw: Option<&str>) -> Result<Scope, FieldError> {
    let problem = |code, message: &str| FieldError {
        allowed: Some(Scope::allowed()),
        ..FieldError::new("scope", code, message)
    };
    match raw {
        None | Some("") => Err(problem("required", "is required: read or write")),
        Some(text) => Scope::parse(text).ok_or_else(|| problem("invalid", "must be read or write")),
    }
}

/// The `name` of a new key: trimmed, at most [`MAX_KEY_NAME`] characters, no control
/// characters; empty is none.
pub fn name_field(raw: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(name) = raw.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let chars = name.chars().count();
    if chars > MAX_KEY_NAME {
        return Err(FieldError::new(
            "name",
            "too_long",
            format!("must be at most {MAX_KEY_NAME} characters (got {chars})"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "invalid",
            "must not contain control characters",
        ));
    }
    Ok(Some(name.to_owned()))
}

/// A new key's text: `rk_{key_id}_{secret}`.
fn new_key() -> (String, String) {
    let key_id = random_base62(KEY_ID_LEN);
    let key = format!("{KEY_PREFIX}{key_id}_{}", random_base62(KEY_SECRET_LEN));
    (key_id, key)
}

type KeyRow = (String, String, Option<String>, i64, Option<i64>);

fn key_info((key_id, scope, name, created_at, last_used_at): KeyRow) -> KeyInfo {
    KeyInfo {
        key_id,
        // The column is checked to hold one of the two.
        scope: Scope::parse(&scope).unwrap_or(Scope::Read),
        name,
        created_at,
        last_used_at,
    }
}

/// Takes the customer's row for the rest of the transaction, so that two changes of one
/// customer's keys (the count of live keys, the last write key) do not race on PostgreSQL;
/// SQLite runs one writer at a time anyway.
fn lock_customer(conn: &mut DbConnection, customer: CustomerId) -> QueryResult<usize> {
    diesel::update(customers::table.filter(customers::id.eq(customer.0)))
        .set(customers::name.eq(customers::name))
        .execute(conn)
}

/// Inserts a live key for `customer`; the caller holds the customer's row.
fn insert_key(
    conn: &mut DbConnection,
    customer: CustomerId,
    scope: Scope,
    name: Option<&str>,
    key_id: &str,
    key: &str,
) -> QueryResult<KeyInfo> {
    let created_at = now_ms();
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::customer_id.eq(customer.0),
            api_keys::key_id.eq(key_id),
            api_keys::key_hash.eq(sha256_hex(key.as_bytes())),
            api_keys::scope.eq(scope.as_str()),
            api_keys::name.eq(name),
            api_keys::created_at.eq(created_at),
        ))
        .execute(conn)?;
    Ok(KeyInfo {
        key_id: key_id.to_owned(),
        scope,
        name: name.map(str::to_owned),
        created_at,
        last_used_at: None,
    })
}

/// The addresses of those of `customers` that are active and have one, by id: where their
/// alerts go. For code already inside a transaction.
pub fn addresses_of(
    conn: &mut DbConnection,
    customers: &[CustomerId],
) -> QueryResult<std::collections::HashMap<CustomerId, String>> {
    let ids: Vec<i64> = customers.iter().map(|c| c.0).collect();
    let rows: Vec<(i64, Option<String>)> = customers::table
        .filter(customers::id.eq_any(ids))
        .filter(customers::revoked_at.is_null())
        .filter(customers::email.is_not_null())
        .select((customers::id, customers::email))
        .load(conn)?;
    Ok(addressed(rows).collect())
}

/// The active customers with an address who chose `report` and whose last reported period
/// ended before `period_end` (or who had none), by id: whose report for the period ending then
/// is due.
pub fn reports_due(
    conn: &mut DbConnection,
    report: ReportEmail,
    period_end: i64,
) -> QueryResult<Vec<(CustomerId, String)>> {
    let rows: Vec<(i64, Option<String>)> = customers::table
        .filter(customers::revoked_at.is_null())
        .filter(customers::report_email.eq(report.as_str()))
        .filter(customers::email.is_not_null())
        .filter(
            customers::report_sent_until
                .is_null()
                .or(customers::report_sent_until.lt(period_end)),
        )
        .order(customers::id)
        .select((customers::id, customers::email))
        .load(conn)?;
    Ok(addressed(rows).collect())
}

/// Records that the customer's report for the period ending at `period_end` is queued, if it
/// still wants `report` and that period was not reported yet; `false` when another run (or
/// instance) got there first, or the choice changed.
pub fn mark_report_sent(
    conn: &mut DbConnection,
    customer: CustomerId,
    report: ReportEmail,
    period_end: i64,
) -> QueryResult<bool> {
    let moved = diesel::update(
        customers::table
            .filter(customers::id.eq(customer.0))
            .filter(customers::revoked_at.is_null())
            .filter(customers::report_email.eq(report.as_str()))
            .filter(
                customers::report_sent_until
                    .is_null()
                    .or(customers::report_sent_until.lt(period_end)),
            ),
    )
    .set(customers::report_sent_until.eq(period_end))
    .execute(conn)?;
    Ok(moved == 1)
}

/// `(id, email)` rows as customers with their address (the rows without one left out).
fn addressed(rows: Vec<(i64, Option<String>)>) -> impl Iterator<Item = (CustomerId, String)> {
    rows.into_iter()
        .filter_map(|(id, email)| Some((CustomerId(id), email?)))
}

fn contact_of((email, report): (Option<String>, String)) -> Contact {
    Contact {
        email,
        // The column is checked to hold one of the three.
        report: ReportEmail::parse(&report).unwrap_or_default(),
    }
}

/// Customer accounts, backed by the database.
#[derive(Clone)]
pub struct Customers {
    db: Db,
}

impl Customers {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates a customer with a new write key.
    pub async fn create(&self, name: &str) -> Result<IssuedKey, DbError> {
        self.create_with_contact(name, Contact::default()).await
    }

    /// Creates a customer with a new write key and its contact (an address already checked).
    pub async fn create_with_contact(
        &self,
        name: &str,
        contact: Contact,
    ) -> Result<IssuedKey, DbError> {
        let name = name.trim().to_owned();
        self.db
            .run(move |conn| {
                db::transaction(conn, |conn| {
                    let (key_id, key) = new_key();
                    let id: i64 = diesel::insert_into(customers::table)
                        .values((
                            customers::name.eq(&name),
                            // Unused since keys live in api_keys; the column is UNIQUE NOT NULL.
                            customers::key_id.eq(&key_id),
                            customers::key_hash.eq(""),
                            customers::created_at.eq(now_ms()),
                            customers::email.eq(&contact.email),
                            customers::report_email.eq(contact.report.as_str()),
                        ))
                        .returning(customers::id)
                        .get_result(conn)?;
                    let info = insert_key(conn, CustomerId(id), Scope::Write, None, &key_id, &key)?;
                    Ok::<_, diesel::result::Error>(IssuedKey {
                        customer: Customer {
                            id: CustomerId(id),
                            name,
                            key_id,
                            scope: Scope::Write,
                        },
                        key,
                        info,
                    })
                })
                .map_err(DbError::from)
            })
            .await
    }

    /// The active customer with this name or numeric id (as the command line names one).
    pub async fn find(&self, who: &str) -> Result<(CustomerId, String), KeyError> {
        let who = who.trim().to_owned();
        let asked = who.clone();
        let found: Vec<(i64, String)> = self
            .db
            .run(move |conn| {
                let active = customers::table
                    .filter(customers::revoked_at.is_null())
                    .select((customers::id, customers::name));
                match who.parse::<i64>() {
                    Ok(id) => active.filter(customers::id.eq(id)).load(conn),
                    Err(_) => active.filter(customers::name.eq(&who)).load(conn),
                }
                .map_err(DbError::from)
            })
            .await?;
        match found.as_slice() {
            [] => Err(KeyError::NoSuchCustomer(asked)),
            [(id, name)] => Ok((CustomerId(*id), name.clone())),
            _ => Err(KeyError::Ambiguous(asked)),
        }
    }

    /// Adds a key to an active customer, by name or numeric id.
    pub async fn add_key_for(
        &self,
        who: &str,
        scope: Scope,
        name: Option<String>,
    ) -> Result<IssuedKey, KeyError> {
        let (id, customer_name) = self.find(who).await?;
        let customer = Customer {
            id,
            name: customer_name,
            key_id: String::new(),
            scope,
        };
        self.add_key(&customer, scope, name).await
    }

    /// Adds a key to `owner`'s account; refused past [`MAX_KEYS`] live keys.
    pub async fn add_key(
        &self,
        owner: &Customer,
        scope: Scope,
        name: Option<String>,
    ) -> Result<IssuedKey, KeyError> {
        let owner = owner.clone();
        self.db
            .run(move |conn| {
                db::transaction(conn, |conn| {
                    if lock_customer(conn, owner.id)? == 0 {
                        return Err(KeyError::NoSuchCustomer(owner.id.to_string()));
                    }
                    let live: i64 = api_keys::table
                        .filter(api_keys::customer_id.eq(owner.id.0))
                        .filter(api_keys::revoked_at.is_null())
                        .count()
                        .get_result(conn)?;
                    if live >= MAX_KEYS {
                        return Err(KeyError::TooManyKeys);
                    }
                    let (key_id, key) = new_key();
                    let info = insert_key(conn, owner.id, scope, name.as_deref(), &key_id, &key)?;
                    Ok(IssuedKey {
                        customer: Customer {
                            key_id,
                            scope,
                            ..owner
                        },
                        key,
                        info,
                    })
                })
            })
            .await
    }

    /// The customer's contact; `None` if no active customer has this id.
    pub async fn contact(&self, customer: CustomerId) -> Result<Option<Contact>, DbError> {
        self.db
            .run(move |conn| {
                let row: Option<(Option<String>, String)> = customers::table
                    .filter(customers::id.eq(customer.0))
                    .filter(customers::revoked_at.is_null())
                    .select((customers::email, customers::report_email))
                    .first(conn)
                    .optional()?;
                Ok(row.map(contact_of))
            })
            .await
    }

    /// Changes an active customer's contact (addresses already checked); the contact after the
    /// change, or `None` if no active customer has this id.
    pub async fn set_contact(
        &self,
        customer: CustomerId,
        change: ContactChange,
    ) -> Result<Option<Contact>, DbError> {
        self.db
            .run(move |conn| {
                db::transaction(conn, |conn| {
                    let active = || {
                        customers::table
                            .filter(customers::id.eq(customer.0))
                            .filter(customers::revoked_at.is_null())
                    };
                    if let Some(email) = &change.email {
                        diesel::update(active())
                            .set(customers::email.eq(email))
                            .execute(conn)?;
                    }
                    if let Some(report) = change.report {
                        diesel::update(active())
                            .set(customers::report_email.eq(report.as_str()))
                            .execute(conn)?;
                    }
                    let row: Option<(Option<String>, String)> = active()
                        .select((customers::email, customers::report_email))
                        .first(conn)
                        .optional()?;
                    Ok::<_, diesel::result::Error>(row.map(contact_of))
                })
                .map_err(DbError::from)
            })
            .await
    }

    /// The customer's live keys, oldest first.
    pub async fn keys(&self, customer: CustomerId) -> Result<Vec<KeyInfo>, DbError> {
        self.db
            .run(move |conn| {
                let rows: Vec<KeyRow> = api_keys::table
                    .filter(api_keys::customer_id.eq(customer.0))
                    .filter(api_keys::revoked_at.is_null())
                    .order(api_keys::id.asc())
                    .select((
                        api_keys::key_id,
                        api_keys::scope,
                        api_keys::name,
                        api_keys::created_at,
                        api_keys::last_used_at,
                    ))
                    .load(conn)?;
                Ok(rows.into_iter().map(key_info).collect())
            })
            .await
    }

    /// Revokes one of the customer's live keys, the one presented included; refused for its
    /// last live write key. Dashboard sessions opened with the key end with it.
    pub async fn revoke_key(&self, customer: CustomerId, key_id: &str) -> Result<(), KeyError> {
        if !is_key_id(key_id) {
            return Err(KeyError::NotFound);
        }
        let key_id = key_id.to_owned();
        self.db
            .run(move |conn| {
                db::transaction(conn, |conn| {
                    lock_customer(conn, customer)?;
                    let live = api_keys::table
                        .filter(api_keys::customer_id.eq(customer.0))
                        .filter(api_keys::revoked_at.is_null());
                    let scope: Option<String> = live
                        .filter(api_keys::key_id.eq(&key_id))
                        .select(api_keys::scope)
                        .first(conn)
                        .optional()?;
                    let Some(scope) = scope else {
                        return Err(KeyError::NotFound);
                    };
                    if scope == Scope::Write.as_str() {
                        let other_writers: i64 = live
                            .filter(api_keys::scope.eq(Scope::Write.as_str()))
                            .filter(api_keys::key_id.ne(&key_id))
                            .count()
                            .get_result(conn)?;
                        if other_writers == 0 {
                            return Err(KeyError::LastWriteKey);
                        }
                    }
                    diesel::update(
                        api_keys::table
                            .filter(api_keys::customer_id.eq(customer.0))
                            .filter(api_keys::key_id.eq(&key_id)),
                    )
                    .set(api_keys::revoked_at.eq(now_ms()))
                    .execute(conn)?;
                    Ok(())
                })
            })
            .await
    }

    /// Revokes the customer with this name or numeric id: every key it has, and its dashboard
    /// sessions. Returns how many customers were.
    pub async fn revoke(&self, who: &str) -> Result<usize, DbError> {
        let who = who.trim().to_owned();
        self.db
            .run(move |conn| {
                db::transaction(conn, |conn| {
                    let now = now_ms();
                    let active = customers::table.filter(customers::revoked_at.is_null());
                    let ids: Vec<i64> = match who.parse::<i64>() {
                        Ok(id) => active
                            .filter(customers::id.eq(id))
                            .select(customers::id)
                            .load(conn)?,
                        Err(_) => active
                            .filter(customers::name.eq(&who))
                            .select(customers::id)
                            .load(conn)?,
                    };
                    diesel::update(customers::table.filter(customers::id.eq_any(&ids)))
                        .set(customers::revoked_at.eq(now))
                        .execute(conn)?;
                    diesel::update(
                        api_keys::table
                            .filter(api_keys::customer_id.eq_any(&ids))
                            .filter(api_keys::revoked_at.is_null()),
                    )
                    .set(api_keys::revoked_at.eq(now))
                    .execute(conn)?;
                    // Their dashboard sessions end with them, on every instance.
                    diesel::delete(sessions::table.filter(sessions::customer_id.eq_any(&ids)))
                        .execute(conn)?;
                    Ok::<_, diesel::result::Error>(ids.len())
                })
                .map_err(DbError::from)
            })
            .await
    }

    /// Resolves a presented key to its customer, and notes that the key was used (at most once
    /// a minute per key).
    pub async fn authenticate(&self, key: &str) -> Result<Customer, AuthError> {
        let key = key.trim();
        let Some(parsed) = parse_key(key) else {
            return Err(AuthError::Rejected);
        };
        let key_id = parsed.key_id.to_owned();
        let presented = sha256_hex(key.as_bytes());
        let found: Option<Customer> = self
            .db
            .run(move |conn| {
                let row: Option<(i64, String, String, Option<i64>, i64, String)> = api_keys::table
                    .inner_join(customers::table)
                    .filter(api_keys::key_id.eq(&key_id))
                    .filter(api_keys::revoked_at.is_null())
                    .filter(customers::revoked_at.is_null())
                    .select((
                        api_keys::id,
                        api_keys::key_hash,
                        api_keys::scope,
                        api_keys::last_used_at,
                        customers::id,
                        customers::name,
                    ))
                    .first(conn)
                    .optional()?;
                let Some((row_id, stored, scope, last_used_at, customer, name)) = row else {
                    return Ok(None);
                };
                if !bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) {
                    return Ok(None);
                }
                let now = now_ms();
                if last_used_at.is_none_or(|at| now - at >= LAST_USED_EVERY_MS) {
                    // Bookkeeping: a failure here does not refuse the request.
                    let noted = diesel::update(api_keys::table.filter(api_keys::id.eq(row_id)))
                        .set(api_keys::last_used_at.eq(now))
                        .execute(conn);
                    if let Err(e) = noted {
                        tracing::warn!(error = %e, "a key's last use could not be noted");
                    }
                }
                Ok::<_, DbError>(Some(Customer {
                    id: CustomerId(customer),
                    name,
                    key_id,
                    scope: Scope::parse(&scope).unwrap_or(Scope::Read),
                }))
            })
            .await?;
        found.ok_or(AuthError::Rejected)
    }
}

/// The bearer token of a request, if any.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequest for Customer {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let customers = req.app_data::<web::Data<Customers>>().cloned();
        let token = bearer_token(req).map(str::to_owned);
        // Set by the rate limiter on limited routes: the key's budget is drawn only once the
        // key is known to be genuine, so nobody can spend another customer's budget.
        let budget = req.extensions().get::<KeyBudget>().cloned();
        Box::pin(async move {
            let customers = customers.ok_or_else(HttpError::internal)?;
            let token = token.ok_or(AuthError::Rejected)?;
            let customer = customers.authenticate(&token).await?;
            if let Some(budget) = budget {
                budget.charge(&token).map_err(rate_limited)?;
            }
            Ok(customer)
        })
    }
}

/// A customer whose key may write: the extractor of every handler that changes something. A
/// read key is refused 403 `insufficient_scope` (after it was authenticated and charged to its
/// budget, like any request).
#[derive(Debug, Clone)]
pub struct WriteCustomer(pub Customer);

impl Deref for WriteCustomer {
    type Target = Customer;

    fn deref(&self) -> &Customer {
        &self.0
    }
}

impl FromRequest for WriteCustomer {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let customer = Customer::from_request(req, payload);
        Box::pin(async move {
            let customer = customer.await?;
            if customer.may_write() {
                Ok(WriteCustomer(customer))
            } else {
                Err(insufficient_scope())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shape_is_checked_before_any_lookup() {
        let good = format!("rk_{}_{}", "a".repeat(12), "B".repeat(32));
        assert!(parse_key(&good).is_some());
        assert!(parse_key("rk_short_secret").is_none());
        assert!(parse_key(&format!("xx_{}_{}", "a".repeat(12), "B".repeat(32))).is_none());
        assert!(parse_key(&format!("rk_{}_{}", "a".repeat(12), "B-".repeat(16))).is_none());
    }

    #[test]
    fn scopes_are_exactly_read_and_write() {
        assert_eq!(Scope::parse("read"), Some(Scope::Read));
        assert_eq!(Scope::parse("write"), Some(Scope::Write));
        assert_eq!(Scope::parse("Write"), None);
        assert_eq!(Scope::parse(" read"), None);
        assert_eq!(Scope::allowed(), ["read", "write"]);
    }
}
