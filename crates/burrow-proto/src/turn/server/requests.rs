//! The requests (RFC 8656 7-12): authentication, Allocate, Refresh, CreatePermission and
//! ChannelBind, and the responses they get.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;

impl TurnServer {
    pub(super) fn finish(&self, mut w: MessageWriter<'_>, key: Option<&Key>, fingerprint: bool) {
        if let Some(software) = &self.config.software {
            w.software(software);
        }
        match key {
            Some(key) => w.finish_with_integrity(key, fingerprint),
            None if fingerprint => w.finish_with_fingerprint(),
            None => w.finish(),
        }
    }

    /// Answers `msg` on `tuple`; with `key`, the response carries MESSAGE-INTEGRITY, and
    /// FINGERPRINT whenever the request had one.
    pub(super) fn reply(
        &mut self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        class: Class,
        key: Option<&Key>,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) {
        let data = self.response(
            msg.method,
            msg.transaction_id,
            class,
            key,
            msg.fingerprint,
            attrs,
        );
        self.send_response(tuple, data, key.is_some());
    }

    /// Queues a response. One not signed with a key we share with the client (a challenge,
    /// or an error before authentication) may go to a forged UDP source, and is several
    /// times the size of the smallest request: those are limited per source, so the server
    /// cannot be used to flood someone.
    pub(super) fn send_response(&mut self, tuple: FiveTuple, data: Vec<u8>, signed: bool) {
        if !signed && tuple.transport == Transport::Udp {
            let source = source_prefix(tuple.client.ip());
            // (`now` is set: answers follow an input.)
            let Some(now) = self.now else { return };
            if !self.unsigned_answers.take(now, &source, 1.0) {
                self.stats.unsigned_limited += 1;
                return;
            }
        }
        self.transmits.push_back(Transmit::Client { tuple, data });
    }

    fn response(
        &self,
        method: Method,
        transaction_id: TransactionId,
        class: Class,
        key: Option<&Key>,
        fingerprint: bool,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let mut data = Vec::new();
        let mut w = MessageWriter::new(&mut data, class, method, transaction_id);
        attrs(&mut w);
        self.finish(w, key, fingerprint);
        data
    }

    fn count_error(&mut self, code: u16) {
        let s = &mut self.stats;
        match code {
            403 => s.forbidden_peers += 1,
            437 => s.mismatches += 1,
            441 => s.wrong_credentials += 1,
            486 => s.quota_refused += 1,
            508 => s.capacity_refused += 1,
            _ => s.bad_requests += 1,
        }
    }

    pub(super) fn error(
        &mut self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        key: Option<&Key>,
    ) {
        self.count_error(code);
        self.reply(tuple, msg, Class::Error, key, |w| {
            w.error_code(code, reason);
        });
    }

    /// 401 or 438 with the realm and a fresh nonce, so the client can (re)try.
    fn challenge(&mut self, now: Instant, tuple: FiveTuple, msg: &Message<'_>, code: u16) {
        let nonce = self.nonces.issue(now, tuple.client);
        let reason = if code == 438 {
            "Stale Nonce"
        } else {
            "Unauthorized"
        };
        let realm = self.config.realm.clone();
        self.reply(tuple, msg, Class::Error, None, |w| {
            w.error_code(code, reason).realm(&realm).nonce(&nonce);
        });
    }

    /// RFC 8489 9.2.4: the long-term credential check. Answers the request itself when it
    /// fails.
    fn authenticate(
        &mut self,
        now: Instant,
        unix_secs: u64,
        tuple: FiveTuple,
        packet: &[u8],
        msg: &Message<'_>,
    ) -> Option<Authed> {
        if msg.integrity.is_none() {
            self.stats.challenges += 1;
            self.challenge(now, tuple, msg, 401);
            return None;
        }
        let (Some(username), Some(realm), Some(nonce)) = (msg.username, msg.realm, msg.nonce)
        else {
            self.error(
                tuple,
                msg,
                400,
                "Bad Request: USERNAME, REALM and NONCE are needed",
                None,
            );
            return None;
        };
        if !self.nonces.is_valid(now, tuple.client, nonce) {
            self.stats.stale_nonces += 1;
            self.challenge(now, tuple, msg, 438);
            return None;
        }
        let keys = match self.credentials.keys(username, unix_secs) {
            Ok(keys) if realm == self.config.realm => keys,
            Err(Refusal::Expired) => {
                self.stats.expired_credentials += 1;
                self.challenge(now, tuple, msg, 401);
                return None;
            }
            _ => Vec::new(),
        };
        match keys.into_iter().find(|k| integrity::verify(packet, msg, k)) {
            Some(key) => Some(Authed {
                username: username.to_string(),
                key,
            }),
            None => {
                self.stats.auth_failures += 1;
                self.challenge(now, tuple, msg, 401);
                None
            }
        }
    }

    /// The allocation of `tuple` for a request other than Allocate, once open and made by
    /// the same user; otherwise the request is answered 437 or 441.
    fn allocation_for(
        &mut self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Option<RelayId> {
        let id = self.by_tuple.get(&tuple).copied();
        match id.and_then(|id| self.allocations.get(&id)) {
            Some(a) if a.pending.is_none() && a.username == auth.username => id,
            Some(a) if a.pending.is_none() => {
                self.error(tuple, msg, 441, "Wrong Credentials", Some(&auth.key));
                None
            }
            _ => {
                self.error(tuple, msg, 437, "Allocation Mismatch", Some(&auth.key));
                None
            }
        }
    }

    fn granted_lifetime(&self, requested: Option<u32>) -> u32 {
        let l = &self.config.limits;
        let (default, max) = (l.default_lifetime.as_secs(), l.max_lifetime.as_secs());
        let secs = requested.map_or(default, |r| u64::from(r).min(max).max(default));
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    pub(super) fn allocate(
        &mut self,
        now: Instant,
        unix_secs: u64,
        tuple: FiveTuple,
        packet: &[u8],
        msg: &Message<'_>,
    ) {
        let Some(auth) = self.authenticate(now, unix_secs, tuple, packet, msg) else {
            return;
        };
        let key = Some(&auth.key);
        if let Some(&id) = self.by_tuple.get(&tuple) {
            let a = &self.allocations[&id];
            if a.transaction_id != msg.transaction_id {
                return self.error(tuple, msg, 437, "Allocation Mismatch", key);
            }
            // A retransmission: answered again once open (while pending, the answer to the
            // first is on its way).
            if a.pending.is_none() {
                self.allocate_success(now, id);
            }
            return;
        }
        match msg.requested_transport {
            None => return self.error(tuple, msg, 400, "Bad Request: no REQUESTED-TRANSPORT", key),
            Some(PROTOCOL_UDP) => {}
            Some(_) => return self.error(tuple, msg, 442, "Unsupported Transport Protocol", key),
        }
        if msg.dont_fragment {
            // RFC 8656 7.2: a server that cannot set DF treats it as unknown.
            self.count_error(420);
            return self.reply(tuple, msg, Class::Error, key, |w| {
                w.error_code(420, "Unknown Attribute")
                    .unknown_attributes(&[AttributeType::DONT_FRAGMENT.0]);
            });
        }
        if msg.reservation_token.is_some()
            && (msg.even_port.is_some() || msg.requested_address_family.is_some())
        {
            return self.error(
                tuple,
                msg,
                400,
                "Bad Request: RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
                key,
            );
        }
        // (With a RESERVATION-TOKEN the reserved port's family is the allocation's.)
        let family = match (msg.reservation_token, msg.requested_address_family) {
            (None, None | Some(0x01)) if self.config.relay_v4 => Some(Family::V4),
            (None, Some(0x02)) if self.config.relay_v6 => Some(Family::V6),
            (Some(_), _) => None,
            _ => return self.error(tuple, msg, 440, "Address Family not Supported", key),
        };
        let limits = &self.config.limits;
        let over = |cap: usize, held: Option<&usize>| cap != 0 && held.copied().unwrap_or(0) >= cap;
        let ip = source_prefix(tuple.client.ip());
        if over(
            limits.max_allocations_per_user,
            self.per_user.get(&auth.username),
        ) || over(limits.max_allocations_per_ip, self.per_ip.get(&ip))
        {
            return self.error(tuple, msg, 486, "Allocation Quota Reached", key);
        }
        let reserve = msg.even_port == Some(true);
        // A reserved port is a socket already counted.
        let new_sockets = match msg.reservation_token {
            Some(_) => 0,
            None => 1 + usize::from(reserve),
        };
        if self.relay_count() + new_sockets > self.config.limits.max_allocations {
            return self.error(tuple, msg, 508, "Insufficient Capacity", key);
        }
        let lifetime = self.granted_lifetime(msg.lifetime);
        let (id, relayed, pending) = match msg.reservation_token {
            Some(token) => {
                let Some(id) = self.tokens.remove(&token) else {
                    return self.error(
                        tuple,
                        msg,
                        508,
                        "Insufficient Capacity: no such reservation",
                        key,
                    );
                };
                let Some(r) = self.reserved.remove(&id) else {
                    return self.error(tuple, msg, 508, "Insufficient Capacity", key);
                };
                (id, Some(r.addr), None)
            }
            None => {
                let family = family.unwrap_or(Family::V4);
                let id = self.next_relay_id();
                let reserve_next = reserve.then(|| self.next_relay_id());
                let port = match (msg.even_port, reserve_next) {
                    (_, Some(next)) => PortRequest::EvenPair { next },
                    (Some(false), _) => PortRequest::Even,
                    _ => PortRequest::Any,
                };
                self.events.push_back(Event::OpenRelay {
                    relay: id,
                    family,
                    port,
                });
                let pending = Pending {
                    lifetime,
                    reserve_next,
                };
                (id, None, Some(pending))
            }
        };
        let limits = &self.config.limits;
        let bucket = (limits.rate_bytes_per_sec > 0).then(|| {
            let rate = limits.rate_bytes_per_sec as f64;
            TokenBucket::new(rate, limits.burst_bytes.max(65_535) as f64)
        });
        *self.per_user.entry(auth.username.clone()).or_default() += 1;
        *self.per_ip.entry(ip).or_default() += 1;
        self.by_tuple.insert(tuple, id);
        self.allocations.insert(
            id,
            Allocation {
                tuple,
                username: auth.username,
                key: auth.key,
                transaction_id: msg.transaction_id,
                relayed,
                pending,
                reservation_token: None,
                fingerprint: msg.fingerprint,
                expires: now + Duration::from_secs(lifetime.into()),
                permissions: BTreeMap::new(),
                channels: BTreeMap::new(),
                channel_of: BTreeMap::new(),
                bucket,
                deadline: None,
            },
        );
        if relayed.is_some() {
            self.stats.allocations_created += 1;
            self.reschedule(id);
            self.allocate_success(now, id);
        }
    }

    /// The Allocate success response (RFC 8656 7.3) for allocation `id`.
    fn allocate_success(&mut self, now: Instant, id: RelayId) {
        let Some(a) = self.allocations.get(&id) else {
            return;
        };
        let Some(relayed) = a.relayed else {
            return;
        };
        let remaining = a.expires.saturating_duration_since(now).as_secs();
        let (tuple, token) = (a.tuple, a.reservation_token);
        let data = self.response(
            Method::ALLOCATE,
            a.transaction_id,
            Class::Success,
            Some(&a.key),
            a.fingerprint,
            |w| {
                w.xor_relayed_address(relayed)
                    .lifetime(u32::try_from(remaining).unwrap_or(u32::MAX));
                if let Some(token) = token {
                    w.reservation_token(token);
                }
                w.xor_mapped_address(tuple.client);
            },
        );
        self.transmits.push_back(Transmit::Client { tuple, data });
    }

    pub(super) fn relay_opened(&mut self, now: Instant, id: RelayId, addr: SocketAddr) {
        if let Some(next) = self.orphans.remove(&id) {
            for relay in std::iter::once(id).chain(next) {
                self.events.push_back(Event::CloseRelay { relay });
            }
            return;
        }
        let Some(a) = self.allocations.get_mut(&id) else {
            // Nobody waits for it (a driver's mistake): give it back.
            self.events.push_back(Event::CloseRelay { relay: id });
            return;
        };
        let Some(pending) = a.pending.take() else {
            return;
        };
        a.relayed = Some(addr);
        a.expires = now + Duration::from_secs(pending.lifetime.into());
        if let (Some(next), Some(port)) = (pending.reserve_next, addr.port().checked_add(1)) {
            let token = self.rng.bytes::<8>();
            a.reservation_token = Some(token);
            let expires = now + RESERVATION_LIFETIME;
            let addr = SocketAddr::new(addr.ip(), port);
            self.reserved.insert(
                next,
                Reservation {
                    token,
                    addr,
                    expires,
                },
            );
            self.tokens.insert(token, next);
            self.timers.push(Reverse((expires, next)));
        }
        self.stats.allocations_created += 1;
        self.reschedule(id);
        self.allocate_success(now, id);
    }

    pub(super) fn relay_failed(&mut self, id: RelayId) {
        self.orphans.remove(&id);
        let Some(a) = self.allocations.get(&id) else {
            return;
        };
        if a.pending.is_none() {
            return;
        }
        let tuple = a.tuple;
        let data = self.response(
            Method::ALLOCATE,
            a.transaction_id,
            Class::Error,
            Some(&a.key),
            a.fingerprint,
            |w| {
                w.error_code(508, "Insufficient Capacity: no relayed port");
            },
        );
        self.count_error(508);
        self.transmits.push_back(Transmit::Client { tuple, data });
        // Its socket was never opened, so there is none to close.
        self.forget(id);
    }

    pub(super) fn refresh(
        &mut self,
        now: Instant,
        unix_secs: u64,
        tuple: FiveTuple,
        packet: &[u8],
        msg: &Message<'_>,
    ) {
        let Some(auth) = self.authenticate(now, unix_secs, tuple, packet, msg) else {
            return;
        };
        let Some(id) = self.allocation_for(tuple, msg, &auth) else {
            return;
        };
        let a = &self.allocations[&id];
        let family = a.relayed.map(Family::of);
        if let Some(f) = msg.requested_address_family {
            let asked = match f {
                0x01 => Some(Family::V4),
                0x02 => Some(Family::V6),
                _ => None,
            };
            if asked != family {
                let key = Some(&auth.key);
                return self.error(tuple, msg, 443, "Peer Address Family Mismatch", key);
            }
        }
        let lifetime = match msg.lifetime {
            Some(0) => {
                self.stats.allocations_deleted += 1;
                self.remove_allocation(id);
                0
            }
            requested => {
                let lifetime = self.granted_lifetime(requested);
                if let Some(a) = self.allocations.get_mut(&id) {
                    a.expires = now + Duration::from_secs(lifetime.into());
                }
                self.reschedule(id);
                lifetime
            }
        };
        self.reply(tuple, msg, Class::Success, Some(&auth.key), |w| {
            w.lifetime(lifetime);
        });
    }

    /// The checks every peer address of a CreatePermission or ChannelBind must pass: the
    /// allocation's family (443) and the peer filter (403). Answers the request on failure.
    fn peer_allowed(
        &mut self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        key: &Key,
        relayed: Option<SocketAddr>,
        peer: SocketAddr,
    ) -> bool {
        if relayed.map(Family::of) != Some(Family::of(peer)) {
            self.error(tuple, msg, 443, "Peer Address Family Mismatch", Some(key));
            return false;
        }
        if !self.config.peers.permits(peer.ip()) {
            self.error(tuple, msg, 403, "Forbidden", Some(key));
            return false;
        }
        true
    }

    pub(super) fn create_permission(
        &mut self,
        now: Instant,
        unix_secs: u64,
        tuple: FiveTuple,
        packet: &[u8],
        msg: &Message<'_>,
    ) {
        let Some(auth) = self.authenticate(now, unix_secs, tuple, packet, msg) else {
            return;
        };
        let Some(id) = self.allocation_for(tuple, msg, &auth) else {
            return;
        };
        let key = &auth.key;
        let mut ips: Vec<IpAddr> = Vec::new();
        let relayed = self.allocations[&id].relayed;
        for peer in msg.peer_addresses() {
            if !self.peer_allowed(tuple, msg, key, relayed, peer) {
                return;
            }
            if !ips.contains(&peer.ip()) {
                ips.push(peer.ip());
            }
        }
        if ips.is_empty() {
            return self.error(
                tuple,
                msg,
                400,
                "Bad Request: no XOR-PEER-ADDRESS",
                Some(key),
            );
        }
        let max = self.config.limits.max_permissions;
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        a.sweep(now);
        let new = ips
            .iter()
            .filter(|ip| !a.permissions.contains_key(ip))
            .count();
        if a.permissions.len() + new > max {
            return self.error(
                tuple,
                msg,
                508,
                "Insufficient Capacity: too many permissions",
                Some(key),
            );
        }
        for ip in ips {
            a.permit(now, ip);
        }
        self.stats.permissions_created += new as u64;
        self.reschedule(id);
        self.reply(tuple, msg, Class::Success, Some(key), |_| {});
    }

    pub(super) fn channel_bind(
        &mut self,
        now: Instant,
        unix_secs: u64,
        tuple: FiveTuple,
        packet: &[u8],
        msg: &Message<'_>,
    ) {
        let Some(auth) = self.authenticate(now, unix_secs, tuple, packet, msg) else {
            return;
        };
        let Some(id) = self.allocation_for(tuple, msg, &auth) else {
            return;
        };
        let key = &auth.key;
        let (Some(channel), Some(peer)) = (msg.channel_number, msg.xor_peer_address) else {
            return self.error(
                tuple,
                msg,
                400,
                "Bad Request: CHANNEL-NUMBER and XOR-PEER-ADDRESS are needed",
                Some(key),
            );
        };
        if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) || peer.port() == 0 {
            return self.error(
                tuple,
                msg,
                400,
                "Bad Request: channel or peer port out of range",
                Some(key),
            );
        }
        let relayed = self.allocations[&id].relayed;
        if !self.peer_allowed(tuple, msg, key, relayed, peer) {
            return;
        }
        let limits = &self.config.limits;
        let (max_channels, max_permissions) = (limits.max_channels, limits.max_permissions);
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        a.sweep(now);
        let bound = a.channels.get(&channel).map(|c| c.peer);
        let of_peer = a.channel_of.get(&peer).copied();
        if bound.is_some_and(|p| p != peer) || of_peer.is_some_and(|c| c != channel) {
            return self.error(
                tuple,
                msg,
                400,
                "Bad Request: channel or peer bound otherwise",
                Some(key),
            );
        }
        let new_channel = bound.is_none();
        let new_permission = !a.permissions.contains_key(&peer.ip());
        if (new_channel && a.channels.len() >= max_channels)
            || (new_permission && a.permissions.len() >= max_permissions)
        {
            return self.error(
                tuple,
                msg,
                508,
                "Insufficient Capacity: too many channels",
                Some(key),
            );
        }
        a.bind(now, channel, peer);
        self.stats.channels_bound += u64::from(new_channel);
        self.stats.permissions_created += u64::from(new_permission);
        self.reschedule(id);
        self.reply(tuple, msg, Class::Success, Some(key), |_| {});
    }
}
