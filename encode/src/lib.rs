//! The byte encoders behind the output formats (escaped text, hexdump, base64), written for
//! throughput: the reader must keep up with a TLS download at full speed, and with the default
//! text output it did not (a 100 MB random download lost 73% of its bytes with a per-byte
//! `write!` escaper). Each encoder appends to a `Vec<u8>` that the renderer reuses and writes
//! out in one call per event.
//!
//! The output is byte-identical to the simple reference encoders in `reference` (the format's
//! definition), which the property tests compare against on random data.

/// One byte's text form: up to 4 bytes (`\xNN`), and how many of them count.
#[derive(Clone, Copy)]
struct TextEscape {
    bytes: [u8; 4],
    len: u8,
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The text form of every byte: printable ASCII as is, `\n` as `\n` plus a line break, `\r`,
/// `\t` and `\\` escaped by name, everything else as `\xNN`.
const TEXT_ESCAPES: [TextEscape; 256] = {
    let mut table = [TextEscape {
        bytes: [0; 4],
        len: 0,
    }; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = match byte as u8 {
            b'\\' => TextEscape {
                bytes: *b"\\\\\0\0",
                len: 2,
            },
            b'\n' => TextEscape {
                bytes: *b"\\n\n\0",
                len: 3,
            },
            b'\r' => TextEscape {
                bytes: *b"\\r\0\0",
                len: 2,
            },
            b'\t' => TextEscape {
                bytes: *b"\\t\0\0",
                len: 2,
            },
            0x20..=0x7e => TextEscape {
                bytes: [byte as u8, 0, 0, 0],
                len: 1,
            },
            _ => TextEscape {
                bytes: [b'\\', b'x', HEX_DIGITS[byte >> 4], HEX_DIGITS[byte & 15]],
                len: 4,
            },
        };
        byte += 1;
    }
    table
};

/// Whether all 8 bytes of `word` are plain (printable ASCII other than `\`): SWAR, no branch
/// per byte. Each sum below stays within its byte lane (no carry into the next one), so bit 7
/// of every lane answers for that lane's byte alone.
#[inline]
fn all_plain(word: u64) -> bool {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const fn splat(byte: u8) -> u64 {
        0x0101_0101_0101_0101 * byte as u64
    }
    // Lanes with bit 7 set are not ASCII.
    let ascii = !word & HIGH;
    let low = word & LOW7;
    // low + (0x80 - 0x20) has bit 7 set iff low >= 0x20.
    let at_least_space = (low + splat(0x80 - 0x20)) & HIGH;
    // low + (0x80 - 0x7f) has bit 7 set iff low >= 0x7f (DEL).
    let del = (low + splat(0x80 - 0x7f)) & HIGH;
    // A backslash lane is zero after the xor; (x + 0x7f) has bit 7 clear iff x == 0.
    let not_backslash =
        ((word ^ splat(b'\\')) & LOW7).wrapping_add(LOW7) & HIGH | (word ^ splat(b'\\')) & HIGH;
    ascii & at_least_space & !del & not_backslash == HIGH
}

/// Appends the escaped text of `data` to `out`, ending with a line break (the format of
/// `--format text`).
pub fn escape_text(data: &[u8], out: &mut Vec<u8>) {
    // At most 4 bytes per input byte, plus the final line break: reserve once, then fill
    // without a capacity check per byte.
    let start = out.len();
    out.resize(start + data.len() * 4 + 1, 0);
    let written = escape_into(data, &mut out[start..]);
    out.truncate(start + written);
    if data.last() != Some(&b'\n') {
        out.push(b'\n');
    }
}

/// Escapes `data` into `buffer` (at least 4 bytes per input byte long); returns the length.
fn escape_into(data: &[u8], buffer: &mut [u8]) -> usize {
    let mut position = 0;
    let mut words = data.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let destination = &mut buffer[position..position + 32];
        if all_plain(u64::from_le_bytes(bytes)) {
            // Runs of printable text (HTTP heads, JSON, HTML): 8 bytes in one copy.
            destination[..8].copy_from_slice(word);
            position += 8;
            continue;
        }
        let mut at = 0;
        for &byte in word {
            let escape = TEXT_ESCAPES[usize::from(byte)];
            destination[at..at + 4].copy_from_slice(&escape.bytes);
            at += usize::from(escape.len);
        }
        position += at;
    }
    for &byte in words.remainder() {
        let escape = TEXT_ESCAPES[usize::from(byte)];
        let length = usize::from(escape.len);
        buffer[position..position + length].copy_from_slice(&escape.bytes[..length]);
        position += length;
    }
    position
}

/// Bytes of one full hexdump line (16 input bytes).
const HEX_LINE: usize = 79;

/// A full hexdump line with its fixed parts in place: 8 offset digits, a space, 16 columns of
/// ` xx` with one more space after the eighth, `  |`, 16 ASCII bytes, `|\n`.
const HEX_TEMPLATE: [u8; HEX_LINE] = {
    let mut line = [b' '; HEX_LINE];
    line[58] = b' ';
    line[59] = b' ';
    line[60] = b'|';
    line[77] = b'|';
    line[78] = b'\n';
    line
};

/// Where column `c`'s two hex digits go in a line.
const HEX_COLUMNS: [usize; 16] = {
    let mut columns = [0; 16];
    let mut column = 0;
    while column < 16 {
        columns[column] = 10 + 3 * column + if column >= 8 { 1 } else { 0 };
        column += 1;
    }
    columns
};

/// Where the ASCII column starts in a line.
const HEX_ASCII: usize = 61;

/// Every byte as two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [HEX_DIGITS[byte >> 4], HEX_DIGITS[byte & 15]];
        byte += 1;
    }
    pairs
};

/// The hexdump's ASCII column: printable ASCII as is, `.` for the rest.
const HEX_SHOWN: [u8; 256] = {
    let mut shown = [b'.'; 256];
    let mut byte = 0x20;
    while byte < 0x7f {
        shown[byte] = byte as u8;
        byte += 1;
    }
    shown
};

/// Appends the hexdump of `data` to `out`: `offset  hex bytes  |ascii|` lines of 16 bytes (the
/// format of `--hex`).
pub fn hexdump(data: &[u8], out: &mut Vec<u8>) {
    if data.len() > 1 << 32 {
        // Offsets beyond 8 hex digits widen the line (never within --max-bytes' limit).
        return reference::hexdump(data, out);
    }
    let mut lines = data.chunks_exact(16);
    let full_lines = data.len() / 16;
    let start = out.len();
    out.resize(start + full_lines * HEX_LINE, 0);
    for ((index, bytes), line) in (&mut lines)
        .enumerate()
        .zip(out[start..].chunks_exact_mut(HEX_LINE))
    {
        write_hex_line(index * 16, bytes, line);
    }
    let rest = lines.remainder();
    if !rest.is_empty() {
        reference::hexdump_line(full_lines * 16, rest, out);
    }
}

/// One full line: the template, then the offset, the hex columns and the ASCII column filled
/// in from tables (fixed positions: no bounds checks left in the loop).
#[inline]
fn write_hex_line(offset: usize, bytes: &[u8], line: &mut [u8]) {
    let (Ok(line), Ok(bytes)) = (
        <&mut [u8; HEX_LINE]>::try_from(line),
        <&[u8; 16]>::try_from(bytes),
    ) else {
        return;
    };
    *line = HEX_TEMPLATE;
    for digit in 0..8 {
        line[digit] = HEX_DIGITS[(offset >> (28 - 4 * digit)) & 15];
    }
    for column in 0..16 {
        let byte = usize::from(bytes[column]);
        let at = HEX_COLUMNS[column];
        line[at] = HEX_PAIRS[byte][0];
        line[at + 1] = HEX_PAIRS[byte][1];
        line[HEX_ASCII + column] = HEX_SHOWN[byte];
    }
}

/// Appends the standard base64 (with padding) of `data` to `out`.
pub fn base64(data: &[u8], out: &mut Vec<u8>) {
    base64_simd::STANDARD.encode_append(data, out);
}

/// The definitions of the formats: plain, one byte at a time. The fast encoders above must
/// produce exactly what these do.
pub mod reference {
    use std::io::Write;

    /// Printable ASCII as is; `\n` shown and kept as a line break; everything else escaped.
    pub fn escape_text(data: &[u8], out: &mut Vec<u8>) {
        for &byte in data {
            match byte {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x20..=0x7e => out.push(byte),
                _ => {
                    let _ = write!(out, "\\x{byte:02x}");
                }
            }
        }
        if data.last() != Some(&b'\n') {
            out.push(b'\n');
        }
    }

    /// `offset  hex bytes  |ascii|` lines of 16 bytes.
    pub fn hexdump(data: &[u8], out: &mut Vec<u8>) {
        for (line, bytes) in data.chunks(16).enumerate() {
            hexdump_line(line * 16, bytes, out);
        }
    }

    /// One hexdump line of up to 16 bytes at `offset`.
    pub fn hexdump_line(offset: usize, bytes: &[u8], out: &mut Vec<u8>) {
        let _ = write!(out, "{offset:08x} ");
        for column in 0..16 {
            if column == 8 {
                out.push(b' ');
            }
            match bytes.get(column) {
                Some(byte) => {
                    let _ = write!(out, " {byte:02x}");
                }
                None => out.extend_from_slice(b"   "),
            }
        }
        out.extend_from_slice(b"  |");
        for &byte in bytes {
            out.push(if (0x20..0x7f).contains(&byte) {
                byte
            } else {
                b'.'
            });
        }
        out.extend_from_slice(b"|\n");
    }

    /// Standard base64 with padding, through the `base64` crate's scalar engine.
    pub fn base64(data: &[u8], out: &mut Vec<u8>) {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        out.extend_from_slice(encoded.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that stand for themselves in text: printable ASCII other than `\\`.
    fn is_plain(byte: u8) -> bool {
        (0x20..=0x7e).contains(&byte) && byte != b'\\'
    }

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, limit: usize) -> usize {
            (self.next() % limit as u64) as usize
        }

        /// Bytes of a random kind: uniform, mostly printable, or printable with runs of the
        /// special bytes, so that both the fast and the slow paths of each encoder run.
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            const SPECIAL: &[u8] = b"\\\n\r\t\x00\x1f\x20\x7e\x7f\x80\xff";
            let kind = self.below(3);
            (0..len)
                .map(|_| {
                    let value = self.next();
                    match kind {
                        0 => value as u8,
                        1 if !value.is_multiple_of(16) => 0x20 + (value >> 8) as u8 % 0x5f,
                        1 => (value >> 8) as u8,
                        _ if value.is_multiple_of(5) => {
                            SPECIAL[(value >> 8) as usize % SPECIAL.len()]
                        }
                        _ => 0x20 + (value >> 8) as u8 % 0x5f,
                    }
                })
                .collect()
        }
    }

    fn lengths() -> Vec<usize> {
        let mut lengths: Vec<usize> = (0..70).collect();
        lengths.extend([127, 128, 129, 255, 256, 1000, 4095, 16384, 16385, 70_000]);
        lengths
    }

    /// Each encoder against its reference on random data of many lengths and kinds, appended
    /// after existing content (the renderers append to a buffer holding the header).
    fn compare(fast: fn(&[u8], &mut Vec<u8>), reference: fn(&[u8], &mut Vec<u8>), seed: u64) {
        let mut random = Random(seed);
        for len in lengths() {
            for _ in 0..6 {
                let data = random.bytes(len);
                let mut expected = b"head\n".to_vec();
                reference(&data, &mut expected);
                let mut got = b"head\n".to_vec();
                fast(&data, &mut got);
                assert!(
                    got == expected,
                    "{len} bytes {data:02x?}:\n{}\nvs\n{}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&expected)
                );
            }
        }
    }

    #[test]
    fn escape_text_matches_the_reference() {
        compare(escape_text, reference::escape_text, 0x1234_5678_9abc_def1);
    }

    #[test]
    fn hexdump_matches_the_reference() {
        compare(hexdump, reference::hexdump, 0x0fed_cba9_8765_4321);
    }

    #[test]
    fn base64_matches_the_reference() {
        compare(base64, reference::base64, 0x5555_aaaa_3333_cccc);
    }

    #[test]
    fn every_byte_value_in_every_word_position() {
        // Each byte value at each position of an 8-byte word, among plain neighbours: the
        // SWAR check must see it wherever it is.
        for byte in 0..=255u8 {
            for position in 0..8 {
                let mut data = *b"abcdefghijklmnopq";
                data[position] = byte;
                for f in [
                    (
                        escape_text as fn(&[u8], &mut Vec<u8>),
                        reference::escape_text as fn(&[u8], &mut Vec<u8>),
                    ),
                    (hexdump, reference::hexdump),
                ] {
                    let (mut got, mut expected) = (Vec::new(), Vec::new());
                    f.0(&data, &mut got);
                    f.1(&data, &mut expected);
                    assert_eq!(got, expected, "byte {byte:#04x} at {position}");
                }
            }
        }
    }

    #[test]
    fn swar_plain_check_agrees_with_the_byte_check() {
        let mut random = Random(99);
        for _ in 0..200_000 {
            let mut word = random.next();
            // Bias towards printable lanes, where the check has to be exact.
            if random.below(2) == 0 {
                word &= 0x7f7f_7f7f_7f7f_7f7f;
                word |= 0x2020_2020_2020_2020 & random.next();
            }
            let expected = word.to_le_bytes().iter().all(|&b| is_plain(b));
            assert_eq!(all_plain(word), expected, "{word:#018x}");
        }
    }
}
