//! Query strings as XRPC takes them: repeated keys for arrays, and bounds on everything.

use crate::XrpcError;

/// Longest query string accepted.
const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Most parameters in one query.
const MAX_PARAMS: usize = 256;

/// A parsed query string.
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub(crate) fn parse(query: Option<&str>) -> Result<Params, XrpcError> {
        let query = query.unwrap_or("");
        if query.len() > MAX_QUERY_BYTES {
            return Err(XrpcError::invalid(format!(
                "the query string is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .take(MAX_PARAMS + 1)
            .collect();
        if pairs.len() > MAX_PARAMS {
            return Err(XrpcError::invalid(format!(
                "more than {MAX_PARAMS} query parameters"
            )));
        }
        Ok(Params { pairs })
    }

    /// The first value of `name`, if given and not empty.
    pub(crate) fn optional(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn required(&self, name: &str) -> Result<&str, XrpcError> {
        self.optional(name).ok_or_else(|| {
            XrpcError::invalid(format!("Error: Params must have the property \"{name}\""))
        })
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `limit`, between 1 and `max`, `default` when absent.
    pub(crate) fn limit(&self, default: usize, max: usize) -> Result<usize, XrpcError> {
        match self.optional("limit") {
            None => Ok(default),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(XrpcError::invalid(format!(
                    "limit must be an integer from 1 to {max}, not {text:?}"
                ))),
            },
        }
    }

    pub(crate) fn boolean(&self, name: &str) -> Result<bool, XrpcError> {
        match self.optional(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(XrpcError::invalid(format!(
                "{name} must be true or false, not {other:?}"
            ))),
        }
    }
}
