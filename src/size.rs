//! Byte sizes on the command line: `1048576`, `64K`, `1M`, `1MiB`, `16MB`.
//!
//! `K`, `M`, `G` and `KiB`, `MiB`, `GiB` are powers of 1024; `KB`, `MB`, `GB` powers of 1000
//! (as `dd` reads them). Letters may be lower case; `B` alone means bytes.

/// Why a size was refused (clap puts it after "invalid value '...' for '--max-bytes <BYTES>'").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "not a size: a number of bytes, optionally followed by K, M, G (or KiB, MiB, GiB: \
         powers of 1024) or KB, MB, GB (powers of 1000), e.g. 1M or 65536"
    )]
    Malformed,
    #[error("too large")]
    TooLarge,
}

/// Parses a size in bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(SizeError::Malformed);
    }
    let number: u64 = text[..digits].parse().map_err(|_| SizeError::TooLarge)?;
    let unit = text[digits..].trim_start();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(SizeError::Malformed),
    };
    number.checked_mul(multiplier).ok_or(SizeError::TooLarge)
}

/// `--max-bytes`: 1 byte to `max`.
pub fn capture_limit(text: &str, max: u64) -> Result<u64, String> {
    let value = parse_size(text).map_err(|error| error.to_string())?;
    if value == 0 || value > max {
        return Err(format!("must be between 1 and {max} bytes (64M)"));
    }
    Ok(value)
}

/// `--ring-bytes`: a power of two of at least 4096 that fits the kernel's u32.
pub fn ring_bytes(text: &str) -> Result<u32, String> {
    let value = parse_size(text).map_err(|error| error.to_string())?;
    match u32::try_from(value) {
        Ok(value) if value.is_power_of_two() && value >= 4096 => Ok(value),
        _ => Err("must be a power of two of at least 4096 (4K), at most 2G".into()),
    }
}

/// `--max-body`: any size.
pub fn body_limit(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_and_suffixes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64K"), Ok(64 * 1024));
        assert_eq!(parse_size("64k"), Ok(64 * 1024));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1mib"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("16MB"), Ok(16_000_000));
        assert_eq!(parse_size("5KB"), Ok(5_000));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("1 M"), Ok(1 << 20));
    }

    #[test]
    fn anything_else_is_refused() {
        for text in ["", "M", "1.5M", "-1", "1X", "1MiBs", "0x10", "K1"] {
            assert_eq!(parse_size(text), Err(SizeError::Malformed), "{text:?}");
        }
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("17179869184G"), Err(SizeError::TooLarge));
    }

    #[test]
    fn option_ranges() {
        assert_eq!(ring_bytes("64M"), Ok(64 << 20));
        assert_eq!(ring_bytes("4K"), Ok(4096));
        assert!(ring_bytes("5000").is_err());
        assert!(ring_bytes("2K").is_err());
        assert!(ring_bytes("4G").is_err());
        assert_eq!(capture_limit("64M", 64 << 20), Ok(64 << 20));
        assert!(capture_limit("0", 64 << 20).is_err());
        assert!(capture_limit("65M", 64 << 20).is_err());
        assert_eq!(body_limit("0"), Ok(0));
    }
}
