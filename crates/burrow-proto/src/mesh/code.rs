//! Short invite codes: `MESH-XXXX-XXXX-XXXX`, easy to read out and type.
//!
//! Twelve symbols from a 31-symbol alphabet, `23456789ABCDEFGHJKMNPQRSTUVWXYZ`: the digits and
//! letters without `0`/`O` and `1`/`I`/`L`, which are easily mistaken for one another. Parsing
//! ignores case and surrounding space. The code has two parts:
//!
//! - The **rendezvous** part, the first group (4 symbols, about 19.8 bits), is not secret: it
//!   lets the joiner find the inviter. While the invite lives, the inviter publishes its node
//!   record in a registry under [`ShortCode::namespace`] (`burrow-invite-` and the group in
//!   lowercase) and answers PAKE starts that name this group; the joiner lists that namespace
//!   and runs the PAKE with each node found (another invite sharing the group, one in about
//!   900,000, costs that invite one of its attempts).
//! - The **password** part, the last two groups (8 symbols, 8 log2(31), about 39.6 bits), is
//!   used only as the PAKE password and never leaves the joiner's or inviter's machine. The
//!   PAKE ([`super::pake`]) lets an attacker test one guess per attempt, online, against the
//!   inviter, and the inviter burns the invite after [`super::pake::MAX_FAILURES`] (3) failed
//!   attempts, so an attacker's chance is at most 3 in 31^8 (about 1 in 2.8 * 10^11) per
//!   invite, however much computing power it has.

use std::fmt;
use std::str::FromStr;

use crate::Rng;

/// The symbols a code is made of.
pub const ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Symbols in the rendezvous part.
pub const RENDEZVOUS_LEN: usize = 4;
/// Symbols in the password part.
pub const PASSWORD_LEN: usize = 8;
/// Entropy of the password part, in bits: `PASSWORD_LEN * log2(31)`.
pub const PASSWORD_BITS: f64 = 39.63;
/// What every code starts with.
pub const PREFIX: &str = "MESH-";
/// The registry namespace prefix under which an inviter waits for its joiners.
pub const NAMESPACE_PREFIX: &str = "burrow-invite-";

const SYMBOLS: usize = RENDEZVOUS_LEN + PASSWORD_LEN;
/// `MESH-` + three groups of four with a dash between.
const TEXT_LEN: usize = PREFIX.len() + SYMBOLS + 2;

/// A short invite code. `Debug` shows only the rendezvous part.
#[derive(Clone, PartialEq, Eq)]
pub struct ShortCode([u8; SYMBOLS]);

/// Why a string is not a short code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Does not start with `MESH-`.
    #[error("a short code starts with \"MESH-\"")]
    Prefix,
    /// Not three dash-separated groups of four after the prefix.
    #[error("a short code looks like MESH-XXXX-XXXX-XXXX")]
    Format,
    /// A character that codes never contain.
    #[error("{ch:?} (character {position}) is not in short codes, which use 2-9 and A-Z without I, L and O")]
    Symbol {
        /// The character.
        ch: char,
        /// Its position in the trimmed text, from 1.
        position: usize,
    },
}

impl ShortCode {
    /// A fresh random code, each symbol uniform over [`ALPHABET`].
    pub fn generate(rng: &mut Rng) -> ShortCode {
        let mut symbols = [0; SYMBOLS];
        for s in &mut symbols {
            // Rejection sampling: 248 = 8 * 31, so every symbol is equally likely.
            *s = loop {
                let b = rng.bytes::<1>()[0];
                if usize::from(b) < 8 * ALPHABET.len() {
                    break ALPHABET[usize::from(b) % ALPHABET.len()];
                }
            };
        }
        ShortCode(symbols)
    }

    /// The rendezvous part (uppercase): not secret, for finding the inviter.
    pub fn rendezvous(&self) -> &str {
        self.group(0)
    }

    /// The registry namespace the inviter waits under: `burrow-invite-` and the rendezvous part
    /// in lowercase. A valid namespace ([`crate::record::is_valid_namespace`]).
    pub fn namespace(&self) -> String {
        format!(
            "{NAMESPACE_PREFIX}{}",
            self.rendezvous().to_ascii_lowercase()
        )
    }

    /// The password part (uppercase), the PAKE's password.
    pub(crate) fn password(&self) -> &[u8] {
        &self.0[RENDEZVOUS_LEN..]
    }

    /// Group `n` (0 to 2) of four symbols.
    fn group(&self, n: usize) -> &str {
        // Every symbol is ASCII.
        std::str::from_utf8(&self.0[n * 4..n * 4 + 4]).unwrap_or_default()
    }
}

/// Whether `b` is a code symbol (uppercase).
pub(crate) fn is_symbol(b: u8) -> bool {
    ALPHABET.contains(&b)
}

impl fmt::Display for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}-{}-{}",
            self.group(0),
            self.group(1),
            self.group(2)
        )
    }
}

impl fmt::Debug for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShortCode({PREFIX}{}-****-****)", self.rendezvous())
    }
}

impl FromStr for ShortCode {
    type Err = CodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if !s
            .get(..PREFIX.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(PREFIX))
        {
            return Err(CodeError::Prefix);
        }
        let mut symbols = [0; SYMBOLS];
        let mut n = 0;
        for (i, ch) in s.chars().enumerate().skip(PREFIX.len()) {
            // Dashes sit after each group of four, except the last.
            let dash_here = (i - PREFIX.len()) % 5 == 4;
            if dash_here || ch == '-' {
                if !(dash_here && ch == '-') {
                    return Err(CodeError::Format);
                }
                continue;
            }
            let b = u8::try_from(ch.to_ascii_uppercase()).unwrap_or(0);
            if !is_symbol(b) {
                return Err(CodeError::Symbol {
                    ch,
                    position: i + 1,
                });
            }
            if n == SYMBOLS {
                return Err(CodeError::Format);
            }
            symbols[n] = b;
            n += 1;
        }
        if n != SYMBOLS || s.len() != TEXT_LEN {
            return Err(CodeError::Format);
        }
        Ok(ShortCode(symbols))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_documented_form() {
        let mut rng = Rng::new(1);
        let code = ShortCode::generate(&mut rng);
        let text = code.to_string();
        assert_eq!(text.len(), TEXT_LEN);
        assert!(text.starts_with("MESH-"));
        assert_eq!(&text[9..10], "-");
        assert_eq!(&text[14..15], "-");
        assert_eq!(code.rendezvous(), &text[5..9]);
        assert_eq!(
            code.password(),
            format!("{}{}", &text[10..14], &text[15..]).as_bytes()
        );
        assert_eq!(
            code.namespace(),
            format!("burrow-invite-{}", text[5..9].to_lowercase())
        );
        assert!(crate::record::is_valid_namespace(&code.namespace()));
        assert_eq!(text.parse(), Ok(code.clone()));
        // Debug never shows the password part.
        let debug = format!("{code:?}");
        assert!(!debug.contains(&text[10..14]), "{debug}");

        // The same seed, the same code; another seed, another.
        assert_eq!(ShortCode::generate(&mut Rng::new(1)), code);
        assert_ne!(ShortCode::generate(&mut Rng::new(2)), code);
    }

    #[test]
    fn the_alphabet_is_unambiguous_and_symbols_uniform() {
        assert_eq!(ALPHABET.len(), 31);
        for bad in b"01OIL" {
            assert!(!is_symbol(*bad));
        }
        let unique: std::collections::BTreeSet<_> = ALPHABET.iter().collect();
        assert_eq!(unique.len(), 31);
        assert!((PASSWORD_LEN as f64 * 31f64.log2() - PASSWORD_BITS).abs() < 0.01);

        // 31,000 symbols: each about 1,000 times (a biased draw, e.g. b % 31 over all 256
        // bytes, would give the first 8 symbols about 1,130 each).
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 31];
        for _ in 0..31_000 / SYMBOLS + 1 {
            for b in ShortCode::generate(&mut rng).0 {
                counts[ALPHABET.iter().position(|a| *a == b).unwrap()] += 1;
            }
        }
        for c in counts {
            assert!((880..1120).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn parsing_ignores_case_and_space_and_says_what_is_wrong() {
        let code: ShortCode = "  mesh-abcd-2345-wxyz\n".parse().unwrap();
        assert_eq!(code.to_string(), "MESH-ABCD-2345-WXYZ");
        assert_eq!(code.rendezvous(), "ABCD");
        assert_eq!(code.password(), b"2345WXYZ");

        let err = |s: &str| s.parse::<ShortCode>().unwrap_err();
        assert_eq!(err(""), CodeError::Prefix);
        assert_eq!(err("ABCD-2345-WXYZ"), CodeError::Prefix);
        assert_eq!(err("burrowinvite..."), CodeError::Prefix);
        assert_eq!(err("MESH-ABCD-2345"), CodeError::Format);
        assert_eq!(err("MESH-ABCD-2345-WXYZ-"), CodeError::Format);
        assert_eq!(err("MESH-ABCD-2345-WXYZA"), CodeError::Format);
        assert_eq!(err("MESH-ABCD2345WXYZ"), CodeError::Format);
        assert_eq!(err("MESH-ABC-D2345-WXYZ"), CodeError::Format);
        assert_eq!(err("MESH--ABCD-2345-WXY"), CodeError::Format);
        assert_eq!(
            err("MESH-ABCD-2345-WXY0"),
            CodeError::Symbol {
                ch: '0',
                position: 19
            }
        );
        assert_eq!(
            err("mesh-abcd-l345-wxyz"),
            CodeError::Symbol {
                ch: 'l',
                position: 11
            }
        );
        for bad in [
            "MESH-OBCD-2345-WXYZ",
            "MESH-IBCD-2345-WXYZ",
            "MESH-1BCD-2345-WXYZ",
        ] {
            assert!(
                matches!(err(bad), CodeError::Symbol { position: 6, .. }),
                "{bad}"
            );
        }
        let e = err("MESH-ABCD-2345-WXY\u{e9}");
        assert_eq!(
            e,
            CodeError::Symbol {
                ch: '\u{e9}',
                position: 19
            }
        );
        assert!(e.to_string().contains("without I, L and O"), "{e}");
        assert!(err("MESH-ABCD-2345-WX")
            .to_string()
            .contains("MESH-XXXX-XXXX-XXXX"));
    }
}
