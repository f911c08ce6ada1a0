//! Who may call the API: the Unix socket's caller by uid, the TCP listener's by bearer token
//! and `Host`, and nobody whose request looks like it comes from a web page.

use std::path::{Path, PathBuf};

use hyper::header::{self, HeaderMap};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ErrorCode};
use crate::paths::{self, PathError};

/// The token file's name in [`crate::paths::state_dir`].
pub const TOKEN_FILE: &str = "api-token";

/// Where the TCP listener's token is kept by default: `api-token` in
/// [`crate::paths::state_dir`].
pub fn default_token_path() -> PathBuf {
    paths::state_dir().join(TOKEN_FILE)
}

/// The TCP listener's bearer token (shown as `Token(..)`, never in full).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read or written, or others may read it.
    #[error("API token file")]
    File(#[from] PathError),
    /// There is no token file (the daemon's TCP listener makes one).
    #[error("no API token at {path} (the daemon creates it when it listens on TCP)")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file does not hold a token.
    #[error("API token file {path} does not hold a token (16 to 256 visible ASCII characters)")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

impl Token {
    /// The token in `path`, or a new random one (64 hex digits) written there with mode 0600.
    pub fn load_or_create(path: &Path) -> Result<Token, TokenError> {
        if paths::read_private_file(path)?.is_none() {
            let fresh = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>());
            // If another process wrote one first, theirs is read below.
            paths::create_private_file(path, format!("{fresh}\n").as_bytes())?;
        }
        Token::read(path)
    }

    /// The token in `path`, which must exist and be private (as a client reads it).
    pub fn read(path: &Path) -> Result<Token, TokenError> {
        let text = paths::read_private_file(path)?.ok_or_else(|| TokenError::Missing {
            path: path.to_owned(),
        })?;
        let token = text.trim();
        let valid =
            (16..=256).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(TokenError::Malformed {
                path: path.to_owned(),
            });
        }
        Ok(Token(token.to_owned()))
    }

    /// The token's text, for a client's `Authorization` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

/// The listener a request came through, and what it knows of the caller.
#[derive(Clone, Debug)]
pub(super) enum Caller {
    /// The Unix socket, with the caller's uid from the kernel (`None` if it would not say).
    Unix {
        /// The caller's uid.
        uid: Option<u32>,
    },
    /// The TCP listener on `127.0.0.1:port`.
    Tcp {
        /// Its port.
        port: u16,
        /// The token every request must carry.
        token: Token,
    },
}

impl Caller {
    /// Whether the caller may use the API at all: on the Unix socket, the daemon's own user
    /// and root may.
    pub(super) fn user_allowed(&self) -> bool {
        match self {
            Caller::Unix { uid } => uid.is_some_and(|u| u == paths::euid() || u == 0),
            Caller::Tcp { .. } => true,
        }
    }

    /// Checks the caller and a request's headers; the first failed check is the answer.
    pub(super) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Caller::Unix { uid } = self {
            if !self.user_allowed() {
                let who = uid.map_or("an unknown user".into(), |u| format!("uid {u}"));
                return Err(ApiError::new(
                    ErrorCode::ForbiddenUser,
                    format!(
                        "{who} may not use this daemon (it runs as uid {}; only that user and root may)",
                        paths::euid()
                    ),
                ));
            }
        }
        // Browsers add one of these to what a web page sends, and forms and fetches from a
        // page reach 127.0.0.1.
        const SEC_FETCH_SITE: header::HeaderName =
            header::HeaderName::from_static("sec-fetch-site");
        for h in [header::ORIGIN, header::REFERER, SEC_FETCH_SITE] {
            if headers.contains_key(&h) {
                return Err(ApiError::new(
                    ErrorCode::ForbiddenOrigin,
                    format!("requests with a {h} header are refused: a web page must not drive the daemon"),
                ));
            }
        }
        let Caller::Tcp { port, token } = self else {
            return Ok(());
        };
        // A name that a web page's DNS points at 127.0.0.1 arrives with that name as its Host.
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let allowed = [format!("127.0.0.1:{port}"), format!("localhost:{port}")];
        if !host.is_some_and(|h| allowed.iter().any(|a| a.eq_ignore_ascii_case(h))) {
            return Err(ApiError::new(
                ErrorCode::ForbiddenHost,
                format!("the Host header must be {} or {}", allowed[0], allowed[1]),
            ));
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .and_then(|v| {
                let (scheme, rest) = v.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
            });
        match presented {
            Some(p) if token.matches(p) => Ok(()),
            Some(_) => Err(ApiError::new(ErrorCode::Unauthorized, "wrong API token")),
            None => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "no API token: send Authorization: Bearer TOKEN, with the token from the daemon's api-token file",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_token_is_made_once_0600_and_read_back() {
        let dir = std::env::temp_dir().join(format!("burrow-token-{}", std::process::id()));
        let path = dir.join(TOKEN_FILE);
        assert!(matches!(
            Token::read(&path),
            Err(TokenError::Missing { .. })
        ));
        let a = Token::load_or_create(&path).unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert_eq!(Token::load_or_create(&path).unwrap(), a);
        assert_eq!(Token::read(&path).unwrap(), a);
        assert_eq!(format!("{a:?}"), "Token(..)");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            Token::read(&path),
            Err(TokenError::Malformed { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tcp_needs_the_host_and_the_token_and_nobody_takes_an_origin() {
        let token = Token("0123456789abcdef0123".into());
        let tcp = Caller::Tcp { port: 7, token };
        let code =
            |c: &Caller, h: &[(&'static str, &str)]| c.check(&headers(h)).err().map(|e| e.code);
        let good = [
            ("host", "127.0.0.1:7"),
            ("authorization", "Bearer 0123456789abcdef0123"),
        ];
        assert_eq!(code(&tcp, &good), None);
        assert_eq!(
            code(
                &tcp,
                &[
                    ("host", "LOCALHOST:7"),
                    ("authorization", "bearer 0123456789abcdef0123")
                ]
            ),
            None
        );
        assert_eq!(
            code(&tcp, &[("host", "127.0.0.1:7")]),
            Some(ErrorCode::Unauthorized)
        );
        assert_eq!(
            code(
                &tcp,
                &[
                    ("host", "127.0.0.1:7"),
                    ("authorization", "Bearer 0123456789abcdef012")
                ]
            ),
            Some(ErrorCode::Unauthorized)
        );
        assert_eq!(
            code(&tcp, &[("host", "evil.example:7"), good[1]]),
            Some(ErrorCode::ForbiddenHost)
        );
        assert_eq!(
            code(&tcp, &[("host", "127.0.0.1:8"), good[1]]),
            Some(ErrorCode::ForbiddenHost)
        );
        assert_eq!(code(&tcp, &[good[1]]), Some(ErrorCode::ForbiddenHost));

        let me = Caller::Unix {
            uid: Some(paths::euid()),
        };
        for h in ["origin", "referer", "sec-fetch-site"] {
            assert_eq!(
                code(&tcp, &[good[0], good[1], (h, "x")]),
                Some(ErrorCode::ForbiddenOrigin)
            );
            assert_eq!(code(&me, &[(h, "x")]), Some(ErrorCode::ForbiddenOrigin));
        }
        assert_eq!(code(&me, &[]), None);
        assert_eq!(code(&Caller::Unix { uid: Some(0) }, &[]), None);
        let stranger = Caller::Unix {
            uid: Some(paths::euid() + 4242),
        };
        assert_eq!(code(&stranger, &[]), Some(ErrorCode::ForbiddenUser));
        assert_eq!(
            code(&Caller::Unix { uid: None }, &[]),
            Some(ErrorCode::ForbiddenUser)
        );
    }
}
