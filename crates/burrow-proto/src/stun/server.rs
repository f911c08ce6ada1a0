//! A sans-IO STUN Binding server with RFC 5780 behaviour discovery.
//!
//! With an alternate address the server listens on four sockets: every combination of the
//! primary and alternate IP with the primary and alternate port. A request received on one of
//! them is answered from the one that CHANGE-REQUEST selects.
//!
//! A host with one IP address (most VPSes) can still serve a second port: two sockets, a
//! CHANGE-REQUEST for the port only, and burrow's ALTERNATE-PORT attribute in place of
//! OTHER-ADDRESS, which RFC 5780 7.4 reserves for servers with a second IP. That is enough to
//! see a mapping that depends on the destination port (a symmetric NAT) and filtering that
//! depends on the source port; other clients see a plain Binding server.

use std::net::SocketAddr;

use super::{ChangeRequest, Class, Message, MessageWriter, Method, StunError};

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

/// The server's second address, which makes NAT behaviour discovery possible.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Alternate {
    /// None: a plain Binding server.
    None,
    /// A second port on the primary IP: ALTERNATE-PORT, and CHANGE-REQUEST for the port only.
    Port(u16),
    /// Another IP and port (RFC 5780): OTHER-ADDRESS, and CHANGE-REQUEST for either.
    Address(SocketAddr),
}

/// What the server needs to know about itself.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The primary listening address.
    pub primary: SocketAddr,
    /// The second address, if any. An alternate IP must be of the primary's family.
    pub alternate: Alternate,
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
    /// Creates a server.
    pub fn new(config: ServerConfig) -> Self {
        StunServer { config }
    }

    /// The addresses the driver must bind, each with its role, primary first.
    pub fn roles(&self) -> Vec<(Role, SocketAddr)> {
        let can = self.can_change();
        let mut roles = Vec::new();
        for alt_ip in [false, can.ip] {
            for alt_port in [false, can.port] {
                let role = Role { alt_ip, alt_port };
                if !roles.iter().any(|(r, _)| *r == role) {
                    roles.push((role, self.address(role)));
                }
            }
        }
        roles
    }

    /// What a CHANGE-REQUEST may ask of this server.
    fn can_change(&self) -> ChangeRequest {
        match self.config.alternate {
            Alternate::None => ChangeRequest::default(),
            Alternate::Port(_) => ChangeRequest {
                ip: false,
                port: true,
            },
            Alternate::Address(_) => ChangeRequest {
                ip: true,
                port: true,
            },
        }
    }

    /// The socket address a role stands for (the primary for a role the server lacks).
    pub fn address(&self, role: Role) -> SocketAddr {
        let primary = self.config.primary;
        let (alt_ip, alt_port) = match self.config.alternate {
            Alternate::None => (primary.ip(), primary.port()),
            Alternate::Port(port) => (primary.ip(), port),
            Alternate::Address(alt) => (alt.ip(), alt.port()),
        };
        SocketAddr::new(
            if role.alt_ip { alt_ip } else { primary.ip() },
            if role.alt_port {
                alt_port
            } else {
                primary.port()
            },
        )
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
        let can = self.can_change();
        if (change.ip && !can.ip) || (change.port && !can.port) {
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
        match self.config.alternate {
            Alternate::None => {}
            Alternate::Port(_) => {
                let other = Role {
                    alt_ip: false,
                    alt_port: !local.alt_port,
                };
                w.alternate_port(self.address(other).port());
            }
            Alternate::Address(_) => {
                let other = Role {
                    alt_ip: !local.alt_ip,
                    alt_port: !local.alt_port,
                };
                w.other_address(self.address(other));
            }
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
