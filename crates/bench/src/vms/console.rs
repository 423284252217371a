//! Watching a guest's console output arrive in chunks (from `serial.log`, or from the serial
//! socket of a plain QEMU): when the first byte came, and when each awaited line appeared. A
//! needle split across two chunks is still found.

/// What has been seen so far, with the time `T` of the chunk each thing arrived in.
#[derive(Debug, Clone)]
pub struct Scan<T> {
    needles: Vec<Vec<u8>>,
    /// The end of the previous chunks, long enough to complete any needle.
    carry: Vec<u8>,
    pub bytes: u64,
    pub first_byte: Option<T>,
    /// Per needle, when it was first complete.
    pub found: Vec<Option<T>>,
}

impl<T: Copy> Scan<T> {
    pub fn new<S: AsRef<str>>(needles: &[S]) -> Scan<T> {
        Scan {
            needles: needles
                .iter()
                .map(|n| n.as_ref().as_bytes().to_vec())
                .collect(),
            carry: Vec::new(),
            bytes: 0,
            first_byte: None,
            found: vec![None; needles.len()],
        }
    }

    /// Takes the next `chunk`, which arrived at `at`.
    pub fn feed(&mut self, chunk: &[u8], at: T) {
        if chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len() as u64;
        self.first_byte.get_or_insert(at);
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(chunk);
        for (needle, found) in self.needles.iter().zip(&mut self.found) {
            if found.is_none()
                && !needle.is_empty()
                && window.windows(needle.len()).any(|w| w == needle.as_slice())
            {
                *found = Some(at);
            }
        }
        let keep = self
            .needles
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        let start = window.len().saturating_sub(keep);
        self.carry = window.split_off(start);
    }

    /// Whether every needle has been seen.
    pub fn done(&self) -> bool {
        self.found.iter().all(Option::is_some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_needles_across_chunks_at_the_time_they_complete() {
        let mut s = Scan::new(&["ferrovirt-guest: booted", "marker vm-0 42"]);
        assert_eq!(s.first_byte, None);
        s.feed(b"", 0);
        assert_eq!(s.first_byte, None);
        s.feed(b"SeaBIOS\r\nferrovirt-gue", 1);
        s.feed(b"st: boo", 2);
        assert_eq!(s.found, [None, None]);
        s.feed(b"ted (kernel 6.1)\r\n", 3);
        s.feed(b"echo marker vm-0 $((6*7))\r\n", 4);
        assert!(!s.done());
        s.feed(b"marker vm-0 42\r\n", 5);
        assert_eq!(
            (s.first_byte, s.found.clone()),
            (Some(1), vec![Some(3), Some(5)])
        );
        assert!(s.done());
        // Later repeats change nothing.
        s.feed(b"ferrovirt-guest: booted", 9);
        assert_eq!(s.found, [Some(3), Some(5)]);
        assert_eq!(s.bytes, 22 + 7 + 18 + 27 + 16 + 23);
    }

    #[test]
    fn byte_by_byte_works() {
        let mut s = Scan::new(&["abc"]);
        for (i, b) in b"xxabxabc".iter().enumerate() {
            s.feed(&[*b], i);
        }
        assert_eq!((s.first_byte, s.found[0]), (Some(0), Some(7)));
    }
}
