//! A sans-IO STUN Binding server with RFC 5780 behaviour discovery.
//!
//! With an alternate address the server listens on four sockets: every combination of the
//! primary and alternate IP with the primary and alternate port. A request received on one of
//! them is answered from the one that CHANGE-REQUEST selects.

use std::net::SocketAddr;

use super::{Class, Message, MessageWriter, Method, StunError};

/// One of the server's (up to) four listening addresses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Role {
    /// Uses the alternate IP address.
    pub alt_ip: bool,
    /// Uses the alternate port.
    pub alt_port: bool,
}

impl Role {
    /// The primary address.
    pub const PRIMARY: Role = Role {
        alt_ip: false,
        alt_port: false,
    };
}

/// What the server needs to know about itself.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The primary listening address.
    pub primary: SocketAddr,
    /// The alternate address (other IP and other port) that enables RFC 5780 discovery.
    pub alternate: Option<SocketAddr>,
    /// Sent as SOFTWARE in responses, if set.
    pub software: Option<String>,
}

/// Where and from where to send the response that [`StunServer::handle`] wrote.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Reply {
    /// The socket to send from.
    pub from: Role,
    /// The destination.
    pub to: SocketAddr,
}

/// Why a datagram got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Not parseable as STUN at all (wrong first bits, cookie or length).
    NotStun(StunError),
    /// A STUN message with a bad attribute, fingerprint or layout.
    Malformed(StunError),
    /// A response or indication, which a server never answers.
    NotRequest,
}

/// The result of handling one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A Binding success response is in the output buffer.
    Success(Reply),
    /// An error response (400 or 420) is in the output buffer.
    Error(Reply, u16),
    /// Nothing to send.
    Ignored(Ignored),
}

/// The Binding server state machine. It holds no per-client state, so a flood costs nothing
/// but the CPU to parse it.
#[derive(Clone, Debug)]
pub struct StunServer {
    config: ServerConfig,
}

impl StunServer {
    /// Creates a server. The alternate address must be of the primary's family.
    pub fn new(config: ServerConfig) -> Self {
        StunServer { config }
    }

    /// The addresses the driver must bind, each with its role.
    pub fn roles(&self) -> Vec<(Role, SocketAddr)> {
        let mut roles = vec![(Role::PRIMARY, self.config.primary)];
        if self.config.alternate.is_some() {
            for (alt_ip, alt_port) in [(false, true), (true, false), (true, true)] {
                let role = Role { alt_ip, alt_port };
                roles.push((role, self.address(role)));
            }
        }
        roles
    }

    /// The socket address a role stands for.
    pub fn address(&self, role: Role) -> SocketAddr {
        let primary = self.config.primary;
        match self.config.alternate {
            None => primary,
            Some(alt) => SocketAddr::new(
                if role.alt_ip { alt.ip() } else { primary.ip() },
                if role.alt_port {
                    alt.port()
                } else {
                    primary.port()
                },
            ),
        }
    }

    /// Handles one datagram received on `local` from `from`, writing any response to `out`.
    pub fn handle(
        &self,
        local: Role,
        from: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Outcome {
        let msg = match Message::parse(packet) {
            Ok(msg) => msg,
            Err(StunError::UnknownComprehensionRequired {
                class: Class::Request,
                method,
                transaction_id,
                types,
            }) => {
                let mut w = MessageWriter::new(out, Class::Error, method, transaction_id);
                w.error_code(420, "Unknown Attribute")
                    .unknown_attributes(&types);
                self.finish(w);
                return Outcome::Error(
                    Reply {
                        from: local,
                        to: from,
                    },
                    420,
                );
            }
            Err(
                e @ (StunError::TooShort { .. }
                | StunError::NotStun
                | StunError::BadMagicCookie { .. }
                | StunError::UnalignedLength { .. }
                | StunError::LengthMismatch { .. }),
            ) => return Outcome::Ignored(Ignored::NotStun(e)),
            Err(e) => return Outcome::Ignored(Ignored::Malformed(e)),
        };
        if msg.class != Class::Request {
            return Outcome::Ignored(Ignored::NotRequest);
        }
        let to = SocketAddr::new(from.ip(), msg.response_port.unwrap_or(from.port()));
        let reply_here = Reply { from: local, to };
        if msg.method != Method::BINDING {
            let mut w = MessageWriter::new(out, Class::Error, msg.method, msg.transaction_id);
            w.error_code(400, "Bad Request: only Binding is served");
            self.finish(w);
            return Outcome::Error(reply_here, 400);
        }
        let change = msg.change_request.unwrap_or_default();
        if (change.ip || change.port) && self.config.alternate.is_none() {
            // RFC 5780 6.1: without an alternate address CHANGE-REQUEST is not understood.
            let mut w = MessageWriter::new(out, Class::Error, msg.method, msg.transaction_id);
            w.error_code(420, "Unknown Attribute: no alternate address")
                .unknown_attributes(&[super::AttributeType::CHANGE_REQUEST.0]);
            self.finish(w);
            return Outcome::Error(reply_here, 420);
        }
        let sender = Role {
            alt_ip: local.alt_ip ^ change.ip,
            alt_port: local.alt_port ^ change.port,
        };
        let mut w = MessageWriter::new(out, Class::Success, Method::BINDING, msg.transaction_id);
        w.xor_mapped_address(from).mapped_address(from);
        w.response_origin(self.address(sender));
        if self.config.alternate.is_some() {
            let other = Role {
                alt_ip: !local.alt_ip,
                alt_port: !local.alt_port,
            };
            w.other_address(self.address(other));
        }
        if let Some(len) = msg.padding_len {
            w.padding(len);
        }
        self.finish(w);
        Outcome::Success(Reply { from: sender, to })
    }

    fn finish(&self, mut w: MessageWriter<'_>) {
        if let Some(software) = &self.config.software {
            w.software(software);
        }
        w.finish_with_fingerprint();
    }
}
