//! Deterministic input mutation for the parsers' no-panic tests (no fuzzing crate needed).

/// An xorshift64 generator with the mutations the tests share.
pub(crate) struct Mutator(u64);

impl Mutator {
    /// The same seed every run, so a failure reproduces.
    pub(crate) fn new() -> Mutator {
        Mutator(0x9e37_79b9_7f4a_7c15)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A copy of `seed` (non-empty) with one to four bytes overwritten.
    pub(crate) fn overwrite(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut m = seed.to_vec();
        for _ in 0..(self.next() % 4 + 1) {
            let i = (self.next() as usize) % m.len();
            m[i] = self.next() as u8;
        }
        m
    }

    /// Cuts `m` to a random length below `bound`.
    pub(crate) fn truncate_below(&mut self, m: &mut Vec<u8>, bound: usize) {
        m.truncate((self.next() as usize) % bound);
    }
}
