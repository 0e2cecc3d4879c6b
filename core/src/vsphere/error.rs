//! What can go wrong with a vSphere call ([`Error`]), and its kinds
//! ([`ErrorKind`]): the collector logs a failure once per kind, and the
//! lease zone's endpoint record counts failures per kind for the
//! Prometheus page. Messages never contain credentials.

/// What went wrong with a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// TLS or client set-up problem.
    #[error("client set-up failed: {0}")]
    Setup(String),
    /// Could not connect (refused, unreachable, DNS, TLS handshake).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The call took longer than the timeout.
    #[error("timed out")]
    Timeout,
    /// Non-SOAP HTTP error status.
    #[error("HTTP status {0}")]
    Http(u16),
    /// The response was not well-formed or not the expected shape.
    #[error("bad response: {0}")]
    Malformed(String),
    /// The session is gone (expired, logged out, server restarted).
    #[error("session not authenticated")]
    NotAuthenticated,
    /// Wrong user name or password.
    #[error("login failed: invalid user name or password")]
    InvalidLogin,
    /// Any other fault the server answered with (a SOAP fault; a query
    /// Prometheus refused), with its words.
    #[error("{0}")]
    Fault(String),
    /// The `scope=` path names nothing in the inventory.
    #[error("scope \"{0}\" names nothing in the inventory (a path such as DC/vm/Folder, DC/host/Cluster or DC/host/Cluster/Resources/Pool)")]
    ScopeNotFound(String),
    /// Transport error other than the above.
    #[error("transport error: {0}")]
    Transport(String),
    /// The answer to `method` was larger than it can legitimately be
    /// ([`super::budget::Budget`]); reading stopped there.
    #[error("the answer to {method} is larger than it can legitimately be ({detail}); reading stopped there")]
    TooLarge {
        method: &'static str,
        detail: String,
    },
}

/// The kind of an [`Error`], without its details: what the collector logs
/// once per change and the endpoint record counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Setup,
    Connect,
    Timeout,
    Http,
    Malformed,
    NotAuthenticated,
    InvalidLogin,
    Fault,
    Transport,
    TooLarge,
}

impl ErrorKind {
    /// Every kind, in code order (the endpoint record's counters).
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Setup,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Http,
        ErrorKind::Malformed,
        ErrorKind::NotAuthenticated,
        ErrorKind::InvalidLogin,
        ErrorKind::Fault,
        ErrorKind::Transport,
        ErrorKind::TooLarge,
    ];

    /// Its stable name: the `kind` label of the Prometheus errors.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Setup => "setup",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Http => "http",
            ErrorKind::Malformed => "malformed",
            ErrorKind::NotAuthenticated => "not_authenticated",
            ErrorKind::InvalidLogin => "invalid_login",
            ErrorKind::Fault => "fault",
            ErrorKind::Transport => "transport",
            ErrorKind::TooLarge => "too_large",
        }
    }
}

impl Error {
    /// The session (or an object of it, like the container view) is gone:
    /// log in again and recreate the view. vcsim answers a view of an
    /// expired session with ManagedObjectNotFound.
    pub fn needs_login(&self) -> bool {
        match self {
            Error::NotAuthenticated => true,
            Error::Fault(s) => s.starts_with("SOAP fault: ManagedObjectNotFound"),
            _ => false,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Setup(_) => ErrorKind::Setup,
            Error::Connect(_) => ErrorKind::Connect,
            Error::Timeout => ErrorKind::Timeout,
            Error::Http(_) => ErrorKind::Http,
            Error::Malformed(_) => ErrorKind::Malformed,
            Error::NotAuthenticated => ErrorKind::NotAuthenticated,
            Error::InvalidLogin => ErrorKind::InvalidLogin,
            Error::Fault(_) | Error::ScopeNotFound(_) => ErrorKind::Fault,
            Error::Transport(_) => ErrorKind::Transport,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
        }
    }

    /// The name of its kind.
    pub fn class(&self) -> &'static str {
        self.kind().name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_in_code_order_and_errors_are_std_errors() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        let e: Box<dyn std::error::Error> = Box::new(Error::Http(503));
        assert_eq!(e.to_string(), "HTTP status 503");
        assert_eq!(Error::Timeout.class(), "timeout");
    }
}
