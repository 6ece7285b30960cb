//! Sessions: logging in with an app password (`com.atproto.server.createSession`), keeping the access
//! token fresh (`refreshSession`), and persisting the session through a [`SessionStore`].
//!
//! An [`Agent`] is a logged-in [`XrpcClient`]. Every call it makes carries the access token, and:
//! - shortly before the token expires (by the JWT's `exp`, within [`AgentConfig::refresh_margin`]),
//!   the session is refreshed first;
//! - if a call is refused with `ExpiredToken` (HTTP 400 or 401), the session is refreshed and the call
//!   is made once more.
//!
//! Refreshes are coalesced: whoever comes first refreshes, everyone else waits for that refresh and
//! uses its result. So a thousand concurrent calls with an expired token cause one `refreshSession`,
//! which matters because each refresh rotates (and so revokes) the refresh token. Every new session is
//! handed to the store's [`SessionStore::save`]; a refused refresh calls [`SessionStore::clear`].
//!
//! JWTs are decoded only to read `exp`; their signatures are not checked (that is the server's job).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use butterfly_syntax::Did;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{decode_json, Received, Want, XrpcClient, XrpcRequest};
use crate::error::Error;
use crate::repo::RepoApi;
use crate::sync::SyncApi;

/// An authenticated session, as `createSession` and `refreshSession` return it (and as a
/// [`SessionStore`] keeps it: it serialises to the same camelCase JSON). `Debug` hides the tokens.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The access token (a JWT) sent with every call.
    pub access_jwt: String,
    /// The refresh token (a JWT), sent only to `refreshSession` and `deleteSession`.
    pub refresh_jwt: String,
    /// The account's handle.
    pub handle: String,
    /// The account's DID.
    pub did: String,
    /// The account's email, if the server shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the email is confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_confirmed: Option<bool>,
    /// Whether logins need an emailed code (`authFactorToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_auth_factor: Option<bool>,
    /// Whether the account is active; absent means active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Why the account is not active (`takendown`, `suspended`, `deactivated`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The DID document, if the server includes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did_doc: Option<Value>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("did", &self.did)
            .field("handle", &self.handle)
            .field("access_expires_at", &self.access_expires_at())
            .field("active", &self.active)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The account's DID, parsed.
    pub fn parse_did(&self) -> Result<Did, butterfly_syntax::Error> {
        Did::parse(&self.did)
    }

    /// When the access token expires, from its `exp` claim.
    pub fn access_expires_at(&self) -> Option<SystemTime> {
        jwt_expiry(&self.access_jwt)
    }

    /// When the refresh token expires, from its `exp` claim.
    pub fn refresh_expires_at(&self) -> Option<SystemTime> {
        jwt_expiry(&self.refresh_jwt)
    }
}

/// Reads the `exp` claim (seconds since the epoch) of a JWT without checking its signature. `None` if
/// the token is not three dot-separated parts, the payload is not base64url JSON, or it has no numeric
/// `exp`.
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // JWTs use unpadded base64url; tolerate padding anyway.
    let payload = payload.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    if !exp.is_finite() || exp < 0.0 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(exp).ok()?)
}

/// Where a session is kept between runs (a file, a keychain, a database row). Called synchronously
/// whenever the session changes, so keep it quick; errors are the implementation's to handle (log
/// them): the client carries on with the session in memory.
pub trait SessionStore: Send + Sync {
    /// Keeps `session`, replacing any previous one.
    fn save(&self, session: &Session);
    /// The kept session, if any.
    fn load(&self) -> Option<Session>;
    /// Forgets the session (after a logout or a refused refresh).
    fn clear(&self);
}

/// A [`SessionStore`] in memory. Clones share the slot, so a test (or a program) can keep one clone
/// and see what the client saved.
#[derive(Clone, Debug, Default)]
pub struct MemorySessionStore {
    slot: Arc<Mutex<Option<Session>>>,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> MemorySessionStore {
        MemorySessionStore::default()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SessionStore for MemorySessionStore {
    fn save(&self, session: &Session) {
        *self.slot() = Some(session.clone());
    }

    fn load(&self) -> Option<Session> {
        self.slot().clone()
    }

    fn clear(&self) {
        *self.slot() = None;
    }
}

/// The input of `com.atproto.server.createSession`. `Debug` hides the password.
#[derive(Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSession {
    /// A handle, a DID or an email.
    pub identifier: String,
    /// The account password or, better, an app password.
    pub password: String,
    /// The code emailed to the user when the account requires a second factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_factor_token: Option<String>,
    /// Log in even if the account is taken down (to export its data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_takendown: Option<bool>,
}

impl std::fmt::Debug for CreateSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSession")
            .field("identifier", &self.identifier)
            .field("auth_factor_token", &self.auth_factor_token.is_some())
            .finish_non_exhaustive()
    }
}

impl CreateSession {
    /// An identifier and a password, nothing else.
    pub fn new(identifier: &str, password: &str) -> CreateSession {
        CreateSession {
            identifier: identifier.to_owned(),
            password: password.to_owned(),
            ..CreateSession::default()
        }
    }
}

/// How an [`Agent`] manages its session. `Default`: no store, refresh 2 minutes before expiry.
#[derive(Clone)]
pub struct AgentConfig {
    /// Where sessions are saved; `None` keeps them in memory only.
    pub store: Option<Arc<dyn SessionStore>>,
    /// Refresh before a call when the access token expires within this margin. A margin longer than
    /// the token's lifetime refreshes before every call.
    pub refresh_margin: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            store: None,
            refresh_margin: Duration::from_secs(120),
        }
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("store", &self.store.is_some())
            .field("refresh_margin", &self.refresh_margin)
            .finish()
    }
}

/// The session shared by an agent and its clones.
pub(crate) struct SessionState {
    current: RwLock<Current>,
    /// Held while a refresh is in flight; see [`SessionState::refresh_if_current`].
    refresh_lock: tokio::sync::Mutex<()>,
    store: Option<Arc<dyn SessionStore>>,
    refresh_margin: Duration,
}

/// The session and its generation, which goes up by one with every refresh. Refreshes are told apart
/// by generation, not by token: two refreshes within the same second can yield the same access JWT.
struct Current {
    session: Session,
    generation: u64,
}

/// An access token and the generation of the session it came from.
pub(crate) struct AccessToken {
    pub(crate) token: String,
    pub(crate) generation: u64,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionState")
            .field("current", &self.read().session)
            .field("refresh_margin", &self.refresh_margin)
            .finish_non_exhaustive()
    }
}

impl SessionState {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn access_token(&self) -> AccessToken {
        let current = self.read();
        AccessToken {
            token: current.session.access_jwt.clone(),
            generation: current.generation,
        }
    }

    fn replace(&self, session: Session) {
        if let Some(store) = &self.store {
            store.save(&session);
        }
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.session = session;
        current.generation += 1;
    }

    /// The access token to send, refreshed first if it is about to expire. A proactive refresh that
    /// fails for a transient reason is not fatal: the old token may still work, and if the server says
    /// `ExpiredToken` the call refreshes again.
    pub(crate) async fn fresh_access_token(
        &self,
        client: &XrpcClient,
    ) -> Result<AccessToken, Error> {
        let access = self.access_token();
        let due = jwt_expiry(&access.token).is_some_and(|expiry| {
            expiry
                .duration_since(SystemTime::now())
                .map_or(true, |left| left <= self.refresh_margin)
        });
        if !due {
            return Ok(access);
        }
        match self.refresh_if_current(client, access.generation).await {
            Ok(()) => Ok(self.access_token()),
            Err(error @ Error::Auth { .. }) => Err(error),
            Err(error) => {
                tracing::warn!(%error, "proactive session refresh failed; trying the old token");
                Ok(access)
            }
        }
    }

    /// Refreshes the session unless it has moved on from `stale_generation` (the generation of the
    /// token the caller found wanting): the first caller refreshes, later ones wait on the lock and
    /// then find a newer generation. Fails with [`Error::Auth`] when the server refuses the refresh
    /// token.
    pub(crate) async fn refresh_if_current(
        &self,
        client: &XrpcClient,
        stale_generation: u64,
    ) -> Result<(), Error> {
        let _guard = self.refresh_lock.lock().await;
        let previous = {
            let current = self.read();
            if current.generation != stale_generation {
                return Ok(());
            }
            current.session.clone()
        };
        let request = XrpcRequest::procedure("com.atproto.server.refreshSession");
        let limit = client.config().max_body_bytes;
        // Boxed: `execute` may call back into this function, so its future must not contain itself.
        let outcome = Box::pin(client.execute(
            &request,
            Want::Buffered { limit },
            Some(&previous.refresh_jwt),
        ))
        .await;
        let response = match outcome {
            Ok(Received::Buffered(response)) => response,
            Ok(Received::Stream(_)) => unreachable!("a buffered call returns a buffered response"),
            Err(
                error @ Error::Xrpc {
                    status: 400 | 401, ..
                },
            ) => {
                if let Some(store) = &self.store {
                    store.clear();
                }
                return Err(Error::Auth {
                    reason: "the server refused to refresh the session; log in again".to_owned(),
                    source: Some(Box::new(error)),
                });
            }
            Err(error) => return Err(error),
        };
        let fresh: Session = decode_json(request.nsid(), &response.body)?;
        // refreshSession does not repeat the email fields; keep what createSession said.
        let merged = Session {
            email: fresh.email.or(previous.email),
            email_confirmed: fresh.email_confirmed.or(previous.email_confirmed),
            email_auth_factor: fresh.email_auth_factor.or(previous.email_auth_factor),
            did_doc: fresh.did_doc.or(previous.did_doc),
            ..fresh
        };
        tracing::debug!(did = %merged.did, "session refreshed");
        self.replace(merged);
        Ok(())
    }
}

/// A logged-in client: every call carries the session's access token, refreshed as needed. Cheap to
/// clone; clones share the session (and its single in-flight refresh).
#[derive(Clone, Debug)]
pub struct Agent {
    client: XrpcClient,
    did: Did,
}

impl Agent {
    /// An agent for an existing session (e.g. one loaded from a store). The session is not saved
    /// until it changes. Fails with [`Error::Auth`] if the session's DID is invalid.
    pub fn new(client: &XrpcClient, session: Session, config: AgentConfig) -> Result<Agent, Error> {
        let did = session.parse_did().map_err(|error| Error::Auth {
            reason: format!("the session's did is invalid: {error}"),
            source: None,
        })?;
        let state = SessionState {
            current: RwLock::new(Current {
                session,
                generation: 0,
            }),
            refresh_lock: tokio::sync::Mutex::new(()),
            store: config.store,
            refresh_margin: config.refresh_margin,
        };
        Ok(Agent {
            client: client.with_session_state(Arc::new(state)),
            did,
        })
    }

    /// The agent for the session in `config.store`, if it holds one. The session is used as is; a
    /// stale one is refreshed on first use.
    pub fn restore(client: &XrpcClient, config: AgentConfig) -> Result<Option<Agent>, Error> {
        match config.store.as_ref().and_then(|store| store.load()) {
            Some(session) => Agent::new(client, session, config).map(Some),
            None => Ok(None),
        }
    }

    /// The account's DID.
    pub fn did(&self) -> &Did {
        &self.did
    }

    /// A copy of the current session.
    pub fn session(&self) -> Session {
        self.state().read().session.clone()
    }

    fn state(&self) -> &SessionState {
        self.client
            .session
            .as_deref()
            .expect("an agent's client always has a session")
    }

    /// The authenticated client, for calls this crate has no typed wrapper for.
    pub fn client(&self) -> &XrpcClient {
        &self.client
    }

    /// `com.atproto.repo.*` calls, authenticated.
    pub fn repo(&self) -> RepoApi<'_> {
        RepoApi::new(&self.client)
    }

    /// `com.atproto.sync.*` calls, authenticated (which some hosts need for deactivated accounts).
    pub fn sync(&self) -> SyncApi<'_> {
        SyncApi::new(&self.client)
    }

    /// An authenticated [`XrpcClient::query`].
    pub async fn query<T: serde::de::DeserializeOwned>(
        &self,
        nsid: &str,
        params: &[(&str, &str)],
    ) -> Result<T, Error> {
        self.client.query(nsid, params).await
    }

    /// An authenticated [`XrpcClient::procedure`].
    pub async fn procedure<I: Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        nsid: &str,
        input: &I,
    ) -> Result<T, Error> {
        self.client.procedure(nsid, input).await
    }

    /// Refreshes the session now (coalesced with any refresh in flight) and returns the new one.
    pub async fn refresh_session(&self) -> Result<Session, Error> {
        let generation = self.state().read().generation;
        self.state()
            .refresh_if_current(&self.client, generation)
            .await?;
        Ok(self.session())
    }

    /// Ends the session on the server (`deleteSession`, which revokes the refresh token) and clears
    /// the store.
    pub async fn logout(self) -> Result<(), Error> {
        let state = self.state();
        let refresh = state.read().session.refresh_jwt.clone();
        let request = XrpcRequest::procedure("com.atproto.server.deleteSession");
        let limit = self.client.config().max_body_bytes;
        self.client
            .execute(&request, Want::Buffered { limit }, Some(&refresh))
            .await?;
        if let Some(store) = &state.store {
            store.clear();
        }
        Ok(())
    }
}

impl XrpcClient {
    /// `com.atproto.server.createSession`: logs in and returns the session, without keeping it. See
    /// [`XrpcClient::login`] for an agent that uses it.
    pub async fn create_session(&self, input: &CreateSession) -> Result<Session, Error> {
        // A repeated login only makes a second session: safe to retry.
        let request = XrpcRequest::procedure("com.atproto.server.createSession")
            .json(input)
            .idempotent();
        self.without_session().send_json(&request).await
    }

    /// Logs in with an identifier (handle, DID or email) and an (app) password; the session lives in
    /// memory. Use [`XrpcClient::login_with`] for a store or a second factor.
    pub async fn login(&self, identifier: &str, password: &str) -> Result<Agent, Error> {
        self.login_with(
            &CreateSession::new(identifier, password),
            AgentConfig::default(),
        )
        .await
    }

    /// Logs in and saves the new session to `config.store`.
    pub async fn login_with(
        &self,
        input: &CreateSession,
        config: AgentConfig,
    ) -> Result<Agent, Error> {
        let session = self.create_session(input).await?;
        if let Some(store) = &config.store {
            store.save(&session);
        }
        Agent::new(self, session, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        format!(
            "{}.{}.c2lnbmF0dXJl",
            encode(r#"{"alg":"ES256K","typ":"at+jwt"}"#),
            encode(payload)
        )
    }

    fn check(token: &str, expected: Option<u64>) {
        assert_eq!(
            jwt_expiry(token),
            expected.map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds)),
            "{token}"
        );
    }

    #[test]
    fn jwt_exp_is_read_without_verification() {
        check(
            &jwt(r#"{"scope":"com.atproto.access","sub":"did:plc:abc","exp":1700000000}"#),
            Some(1_700_000_000),
        );
        check(&jwt(r#"{"exp":1700000000.0}"#), Some(1_700_000_000));
        check(&jwt(r#"{"sub":"did:plc:abc"}"#), None);
        check(&jwt(r#"{"exp":"tomorrow"}"#), None);
        check(&jwt(r#"{"exp":-5}"#), None);
        check(&jwt("not json"), None);
        check("only.two", None);
        check("a.b.c.d", None);
        check("header.%%%.sig", None);
        check("", None);
        // Padded payloads are tolerated.
        let padded = {
            let encode = base64::engine::general_purpose::URL_SAFE;
            format!("h.{}.s", encode.encode(r#"{"exp":12}"#))
        };
        check(&padded, Some(12));
    }

    #[test]
    fn session_json_round_trips_and_debug_hides_tokens() {
        let json = serde_json::json!({
            "accessJwt": "secret-access", "refreshJwt": "secret-refresh",
            "handle": "alice.test", "did": "did:plc:abc", "email": "a@example.com",
            "emailConfirmed": false, "active": true, "unknownField": 1
        });
        let session: Session = serde_json::from_value(json).expect("session parses");
        assert_eq!(session.email.as_deref(), Some("a@example.com"));
        let debug = format!("{session:?}");
        assert!(!debug.contains("secret"), "{debug}");
        let back: Session =
            serde_json::from_value(serde_json::to_value(&session).expect("serialises"))
                .expect("parses again");
        assert_eq!(back, session);
        let input = CreateSession::new("alice.test", "hunter2");
        assert!(!format!("{input:?}").contains("hunter2"));
    }
}
