//! Parse and print atproto identifiers.
//!
//! Every identifier string in atproto has its own syntax. This crate has one
//! type per identifier; each is built with `parse` (or `FromStr`), keeps the
//! validated string, gives it back with `as_str`, `Display` and
//! `AsRef<str>`, and fails with the one [`Error`] type, whose message says
//! what was expected and what was found.
//!
//! | Type | Example | Spec |
//! |------|---------|------|
//! | [`Did`] | `did:plc:ewvi7nxzyoun6zhxrhs64oiz` | <https://atproto.com/specs/did> |
//! | [`Handle`] | `alice.bsky.social` | <https://atproto.com/specs/handle> |
//! | [`AtIdentifier`] | a DID or a handle | <https://atproto.com/specs/lexicon#at-identifier> |
//! | [`Nsid`] | `app.bsky.feed.post` | <https://atproto.com/specs/nsid> |
//! | [`RecordKey`] | `self`, `3jzfcijpj2z2a` | <https://atproto.com/specs/record-key> |
//! | [`Tid`], [`TidClock`] | `3jzfcijpj2z2a` | <https://atproto.com/specs/tid> |
//! | [`AtUri`] | `at://alice.test/app.bsky.feed.post/3jzfcijpj2z2a` | <https://atproto.com/specs/at-uri-scheme> |
//! | [`Datetime`] | `1985-04-12T23:20:50.123Z` | <https://atproto.com/specs/lexicon#datetime> |
//! | [`Language`] | `pt-BR` | <https://atproto.com/specs/lexicon#language> |
//! | [`CidString`] | `bafyrei…` | <https://atproto.com/specs/lexicon#cid> |
//! | [`Uri`] | `https://example.com` | <https://atproto.com/specs/lexicon#uri> |
//!
//! What this crate does **not** do: no handle or DID resolution, no network,
//! no file or other I/O, no async, no CID decoding (a [`CidString`] is only
//! checked for shape). The only clock it reads is in [`TidClock::now`].
//! Parsing is done by hand over bytes, in linear time, and never panics,
//! whatever the input.
//!
//! Handles are stored as given; use [`Handle::normalized`] for the lowercase
//! canonical form.
//!
//! ```
//! use butterfly_syntax::{AtUri, Datetime, Tid};
//!
//! let uri: AtUri = "at://alice.test/app.bsky.feed.post/3jzfcijpj2z2a".parse()?;
//! assert!(uri.authority().is_handle());
//! assert_eq!(uri.collection().map(|c| c.name()), Some("post"));
//! let rkey = uri.record_key().map(|k| k.as_str()).unwrap_or_default();
//! let tid = Tid::parse(rkey)?;
//! assert_eq!(tid.clock_id(), 6);
//!
//! let when = Datetime::parse("1985-04-12T23:20:50.123Z")?;
//! assert_eq!(when.timestamp_micros(), 482_196_050_123_000);
//!
//! let err = butterfly_syntax::RecordKey::parse("a/b").unwrap_err();
//! assert!(err.to_string().starts_with("record key \"a/b\": '/' is not allowed"));
//! # Ok::<(), butterfly_syntax::Error>(())
//! ```

#![warn(missing_docs)]

mod error;

pub mod at_identifier;
pub mod at_uri;
pub mod cid_string;
pub mod datetime;
pub mod did;
pub mod handle;
pub mod language;
pub mod nsid;
pub mod record_key;
pub mod tid;
pub mod uri;

pub use at_identifier::AtIdentifier;
pub use at_uri::AtUri;
pub use cid_string::CidString;
pub use datetime::Datetime;
pub use did::Did;
pub use error::{Error, ErrorKind};
pub use handle::Handle;
pub use language::Language;
pub use nsid::Nsid;
pub use record_key::RecordKey;
pub use tid::{Tid, TidClock};
pub use uri::Uri;
