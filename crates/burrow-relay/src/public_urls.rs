//! The URLs this relay answers to: a client's ClientAuth must be signed for one of them
//! ([`burrow_proto::relay::auth`]), so that a hostile relay cannot pass a client's signature on
//! to this one.
//!
//! With the `public_url` setting, exactly the URLs given. Without it, what the relay can tell
//! by itself, for each connection: the address the connection arrived at, as `http://IP:PORT`
//! (`https://` with TLS), and with TLS, every host its certificate is valid for (checked as a
//! TLS client checks it, wildcards included) at that port. Nothing a client sends counts: not
//! the `Host` header, not the TLS server name, since a hostile relay writes those as it likes.
//!
//! A relay that clients reach any other way (behind a reverse proxy, at a DNS name over plain
//! HTTP, through a port forward) must be given its public URLs: clients that dialled another
//! URL are refused, with a close reason naming the URL they signed for and this relay's.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use burrow_proto::relay::auth::OwnUrls;
use burrow_proto::relay::RelayUrl;
use tokio_rustls::rustls::client::verify_server_name;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::server::ParsedCertificate;

/// What every connection's check starts from.
#[derive(Debug)]
pub(crate) struct PublicUrls {
    /// The `public_url` setting: when given, these and nothing else.
    configured: Vec<RelayUrl>,
    /// The certificate served, when the relay does TLS itself.
    cert: Option<CertificateDer<'static>>,
}

impl PublicUrls {
    /// The configured URLs, or none to derive them; `cert` is the leaf certificate served, if
    /// the relay does TLS.
    pub(crate) fn new(configured: Vec<RelayUrl>, cert: Option<CertificateDer<'static>>) -> Self {
        PublicUrls { configured, cert }
    }

    /// The first configured URL, to give clients.
    pub(crate) fn first(&self) -> Option<&RelayUrl> {
        self.configured.first()
    }

    /// The URLs a client on a connection that arrived at `local` may have signed for.
    pub(crate) fn for_connection(self: &Arc<Self>, local: SocketAddr) -> Arc<dyn OwnUrls> {
        Arc::new(ConnectionUrls {
            public: self.clone(),
            local: SocketAddr::new(local.ip().to_canonical(), local.port()),
        })
    }

    /// Whether the certificate is valid for `host`.
    fn certifies(&self, host: &str) -> bool {
        let Some(cert) = &self.cert else {
            return false;
        };
        let (Ok(parsed), Ok(name)) = (
            ParsedCertificate::try_from(cert),
            ServerName::try_from(host),
        ) else {
            return false;
        };
        verify_server_name(&parsed, &name).is_ok()
    }
}

/// [`PublicUrls`] for one connection.
#[derive(Debug)]
struct ConnectionUrls {
    public: Arc<PublicUrls>,
    /// Where the connection arrived (IPv4-mapped IPv6 as IPv4).
    local: SocketAddr,
}

impl OwnUrls for ConnectionUrls {
    fn accepts(&self, url: &RelayUrl) -> bool {
        let public = &self.public;
        if !public.configured.is_empty() {
            return public.configured.contains(url);
        }
        if url.port() != self.local.port() || url.is_tls() != public.cert.is_some() {
            return false;
        }
        match url.host().parse::<IpAddr>() {
            Ok(ip) => ip.to_canonical() == self.local.ip(),
            Err(_) => public.certifies(url.host()),
        }
    }
}

impl fmt::Display for ConnectionUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let public = &self.public;
        if !public.configured.is_empty() {
            let urls: Vec<String> = public.configured.iter().map(|u| u.to_string()).collect();
            return f.write_str(&urls.join(", "));
        }
        if public.cert.is_some() {
            write!(f, "https://{} or a name on its certificate", self.local)
        } else {
            write!(f, "http://{}", self.local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RelayUrl {
        s.parse().unwrap()
    }

    fn local(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_settings_the_address_a_connection_arrived_at() {
        let public = Arc::new(PublicUrls::new(Vec::new(), None));
        let own = public.for_connection(local("10.0.0.5:8443"));
        assert!(own.accepts(&url("http://10.0.0.5:8443")));
        for other in [
            "http://10.0.0.6:8443",
            "http://10.0.0.5:8444",
            "https://10.0.0.5:8443",
            "http://relay.example.org:8443",
        ] {
            assert!(!own.accepts(&url(other)), "{other}");
        }
        assert_eq!(own.to_string(), "http://10.0.0.5:8443");
        // An IPv4 client of a dual-stack listener arrives at a mapped address.
        let own = public.for_connection(local("[::ffff:10.0.0.5]:80"));
        assert!(own.accepts(&url("http://10.0.0.5")));
        let own = public.for_connection(local("[2001:db8::1]:80"));
        assert!(own.accepts(&url("http://[2001:DB8::1]:80")));
        assert_eq!(own.to_string(), "http://[2001:db8::1]:80");
    }

    #[test]
    fn with_tls_any_host_the_certificate_is_valid_for() {
        let cert = rcgen::generate_simple_self_signed(vec![
            "relay.example.org".into(),
            "*.relays.example.org".into(),
        ])
        .unwrap();
        let public = Arc::new(PublicUrls::new(Vec::new(), Some(cert.cert.der().clone())));
        let own = public.for_connection(local("10.0.0.5:443"));
        for ok in [
            "https://relay.example.org",
            "https://eu.relays.example.org:443",
            "https://10.0.0.5",
        ] {
            assert!(own.accepts(&url(ok)), "{ok}");
        }
        for other in [
            "http://relay.example.org:443",
            "https://relay.example.org:8443",
            "https://evil.example.org",
            "https://a.b.relays.example.org",
        ] {
            assert!(!own.accepts(&url(other)), "{other}");
        }
        assert_eq!(
            own.to_string(),
            "https://10.0.0.5:443 or a name on its certificate"
        );
    }

    #[test]
    fn configured_urls_and_nothing_else() {
        // `--listen 0.0.0.0:8443` behind a TLS-terminating proxy at https://relay.example.org.
        let public = Arc::new(PublicUrls::new(
            vec![
                url("https://relay.example.org"),
                url("http://10.0.0.5:8443"),
            ],
            None,
        ));
        let own = public.for_connection(local("127.0.0.1:8443"));
        assert!(own.accepts(&url("https://relay.example.org:443")));
        assert!(own.accepts(&url("http://10.0.0.5:8443")));
        assert!(!own.accepts(&url("http://127.0.0.1:8443")));
        assert_eq!(
            own.to_string(),
            "https://relay.example.org:443, http://10.0.0.5:8443"
        );
        assert_eq!(public.first(), Some(&url("https://relay.example.org")));
    }
}
