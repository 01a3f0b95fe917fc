//! Content codings (`Content-Encoding`): gzip, deflate, br and zstd bodies decoded for display.
//! The body as sent is always what JSON's `body_b64` holds; this is the view beside it.
//!
//! - A list of codings (`gzip, br`) is undone from the last applied to the first.
//! - Output is bounded by `--max-body`; a zstd window larger than [`MAX_ZSTD_WINDOW`] is
//!   refused (RFC 8878 asks HTTP decoders to accept 8 MiB), brotli's is at most 16 MiB.
//! - A body cut by `--max-body` (or by lost bytes) is decoded as far as its kept bytes go, and
//!   the result says so: nothing is claimed complete that was not.

use std::io::Read;

/// Largest zstd window accepted (RFC 8878, section 3.1.1.1.2: 8 MiB for HTTP).
pub const MAX_ZSTD_WINDOW: u64 = 8 << 20;

/// A body's content coding undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The `Content-Encoding` value, as sent.
    pub coding: String,
    /// What decoding gave (for a partial result, the part before the stop).
    pub data: Vec<u8>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The whole body was kept and decoded to its end.
    Complete,
    /// The body was cut (`--max-body`, lost bytes): what was kept is decoded.
    Cut,
    /// The decoded body is longer than `--max-body`: shown up to it.
    OutputLimit,
    /// A coding that is not decoded here (`compress`, `exi`, ...): the body is shown as sent.
    Unsupported(String),
    /// The body does not decode as its coding says (`data` holds what came before the error).
    Failed(String),
}

impl Outcome {
    /// Words for text output and JSON's `note`; `None` when complete.
    pub fn note(&self) -> Option<String> {
        match self {
            Outcome::Complete => None,
            Outcome::Cut => {
                Some("body cut (not all of it kept): decoded what was kept".to_string())
            }
            Outcome::OutputLimit => Some("decoded body over --max-body: cut there".to_string()),
            Outcome::Unsupported(coding) => Some(format!("coding {coding} is not decoded")),
            Outcome::Failed(error) => Some(format!("does not decode: {error}")),
        }
    }
}

/// Undoes `content_encoding` on `data` (the kept bytes of a body; `cut` when not all of it was
/// kept), at most `max_output` bytes of output. `None` when there is no coding to undo
/// (absent, empty, or `identity`).
pub fn decode(content_encoding: &[u8], data: &[u8], cut: bool, max_output: u64) -> Option<Decoded> {
    let header = String::from_utf8_lossy(content_encoding).into_owned();
    let codings: Vec<String> = header
        .split(',')
        .map(|coding| coding.trim().to_ascii_lowercase())
        .filter(|coding| !coding.is_empty() && coding != "identity")
        .collect();
    if codings.is_empty() {
        return None;
    }
    let mut current = data.to_vec();
    // A cut input, or an output cut by the limit, is no longer a whole stream for the next
    // coding out.
    let mut partial = cut;
    for coding in codings.iter().rev() {
        let result = decode_one(coding, &current, max_output);
        match result {
            Step::Done { output, hit_limit } => {
                current = output;
                if hit_limit {
                    return Some(Decoded {
                        coding: header,
                        data: current,
                        outcome: Outcome::OutputLimit,
                    });
                }
            }
            Step::Unsupported => {
                return Some(Decoded {
                    coding: header,
                    data: Vec::new(),
                    outcome: Outcome::Unsupported(coding.clone()),
                })
            }
            Step::Stopped { output, error } => {
                let outcome = if partial {
                    Outcome::Cut
                } else {
                    Outcome::Failed(error)
                };
                partial = true;
                current = output;
                if !matches!(outcome, Outcome::Cut) {
                    return Some(Decoded {
                        coding: header,
                        data: current,
                        outcome,
                    });
                }
            }
        }
    }
    Some(Decoded {
        coding: header,
        data: current,
        outcome: if partial {
            Outcome::Cut
        } else {
            Outcome::Complete
        },
    })
}

enum Step {
    /// Decoded to the end of the input (or to the output limit).
    Done {
        output: Vec<u8>,
        hit_limit: bool,
    },
    /// The input ended early or is corrupt; `output` is what came before.
    Stopped {
        output: Vec<u8>,
        error: String,
    },
    Unsupported,
}

fn decode_one(coding: &str, data: &[u8], max_output: u64) -> Step {
    let mut output = Vec::new();
    // One byte more than the limit tells a body that is exactly the limit from a longer one.
    let budget = max_output.saturating_add(1);
    let result = match coding {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(data)
            .take(budget)
            .read_to_end(&mut output),
        "deflate" => {
            // "deflate" is zlib-wrapped by the standard; some servers send it raw.
            match flate2::read::ZlibDecoder::new(data)
                .take(budget)
                .read_to_end(&mut output)
            {
                Ok(n) => Ok(n),
                Err(zlib_error) => {
                    let zlib_output = std::mem::take(&mut output);
                    match flate2::read::DeflateDecoder::new(data)
                        .take(budget)
                        .read_to_end(&mut output)
                    {
                        Ok(n) => Ok(n),
                        // Neither: the zlib reading is the standard one.
                        Err(_) => {
                            output = zlib_output;
                            Err(zlib_error)
                        }
                    }
                }
            }
        }
        "br" => brotli_decompressor::Decompressor::new(data, 4096)
            .take(budget)
            .read_to_end(&mut output),
        "zstd" => zstd(data, budget, &mut output),
        _ => return Step::Unsupported,
    };
    let hit_limit = output.len() as u64 > max_output;
    if hit_limit {
        output.truncate(max_output as usize);
    }
    match result {
        Ok(_) => Step::Done { output, hit_limit },
        // The limit was reached before the error: what is shown is all good.
        Err(_) if hit_limit => Step::Done { output, hit_limit },
        Err(error) => Step::Stopped {
            output,
            error: error.to_string(),
        },
    }
}

/// Every zstd frame of `data` in turn (a body may hold several), skippable frames skipped.
fn zstd(data: &[u8], budget: u64, output: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut rest = data;
    while !rest.is_empty() && (output.len() as u64) < budget {
        let decoder = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
            &mut rest,
            MAX_ZSTD_WINDOW,
        )
        .map_err(|error| std::io::Error::other(error.to_string()))?;
        let room = budget - output.len() as u64;
        decoder.take(room).read_to_end(output)?;
    }
    Ok(output.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const TEXT: &[u8] = b"A body that is text, said twice. A body that is text, said twice.\n";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("gzip");
        encoder.finish().expect("gzip")
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    /// `TEXT` compressed by node's zlib (`zlib.brotliCompressSync(TEXT)`): an encoder this
    /// crate does not have, so the bytes are the independent oracle's.
    const TEXT_BR: &[u8] = &[
        0x1b, 0x41, 0x00, 0x60, 0x8c, 0xd4, 0x56, 0xf7, 0xc7, 0xa0, 0xa5, 0x12, 0x24, 0x28, 0xad,
        0x14, 0xe6, 0x60, 0x03, 0x0e, 0xd8, 0xcb, 0xc6, 0x71, 0xf4, 0x33, 0xa3, 0x62, 0x35, 0x5b,
        0xd0, 0x1d, 0x20, 0x7e, 0xf2, 0x9f, 0xfe, 0x24, 0x02,
    ];

    #[test]
    fn every_coding_decodes_to_the_original() {
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(TEXT).expect("zlib");
        let zlib = zlib.finish().expect("zlib");
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(TEXT).expect("deflate");
        let raw = raw.finish().expect("deflate");
        for (coding, body) in [
            ("gzip", gzip(TEXT)),
            ("x-gzip", gzip(TEXT)),
            ("deflate", zlib),
            ("Deflate", raw),
            ("br", TEXT_BR.to_vec()),
            ("zstd", zstd(TEXT)),
            ("identity, zstd", zstd(TEXT)),
        ] {
            let decoded = decode(coding.as_bytes(), &body, false, 1 << 20).expect(coding);
            assert_eq!(decoded.outcome, Outcome::Complete, "{coding}");
            assert_eq!(decoded.data, TEXT, "{coding}");
            assert_eq!(decoded.coding, coding);
        }
        assert_eq!(decode(b"identity", TEXT, false, 100), None);
        assert_eq!(decode(b"", TEXT, false, 100), None);
    }

    #[test]
    fn stacked_codings_are_undone_last_first() {
        let body = gzip(&zstd(TEXT));
        let decoded = decode(b"zstd, gzip", &body, false, 1 << 20).expect("decoded");
        assert_eq!(decoded.outcome, Outcome::Complete);
        assert_eq!(decoded.data, TEXT);
    }

    #[test]
    fn several_zstd_frames_are_one_body() {
        let mut body = zstd(b"first frame, ");
        body.extend(zstd(b"second frame"));
        let decoded = decode(b"zstd", &body, false, 1 << 20).expect("decoded");
        assert_eq!(decoded.data, b"first frame, second frame");
    }

    #[test]
    fn a_cut_body_is_decoded_as_far_as_it_goes_and_says_so() {
        let long: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        for (coding, body) in [("gzip", gzip(&long)), ("zstd", zstd(&long))] {
            let kept = &body[..body.len() / 2];
            let decoded = decode(coding.as_bytes(), kept, true, 1 << 24).expect(coding);
            assert_eq!(decoded.outcome, Outcome::Cut, "{coding}");
            assert!(!decoded.data.is_empty(), "{coding}: something decoded");
            assert!(long.starts_with(&decoded.data), "{coding}: a true prefix");
            assert!(decoded.data.len() < long.len(), "{coding}");
        }
        let decoded = decode(b"br", &TEXT_BR[..20], true, 1 << 20).expect("br");
        assert_eq!(decoded.outcome, Outcome::Cut);
        assert!(TEXT.starts_with(&decoded.data));
    }

    #[test]
    fn output_stops_at_the_limit_and_corruption_is_named() {
        let decoded = decode(b"gzip", &gzip(TEXT), false, 10).expect("decoded");
        assert_eq!(decoded.outcome, Outcome::OutputLimit);
        assert_eq!(decoded.data, &TEXT[..10]);
        // Exactly the limit is complete.
        let decoded = decode(b"gzip", &gzip(TEXT), false, TEXT.len() as u64).expect("decoded");
        assert_eq!(decoded.outcome, Outcome::Complete);
        for coding in ["gzip", "deflate", "br", "zstd"] {
            let decoded = decode(coding.as_bytes(), TEXT, false, 1 << 20).expect(coding);
            assert!(
                matches!(decoded.outcome, Outcome::Failed(_)),
                "{coding}: {:?}",
                decoded.outcome
            );
        }
        let decoded = decode(b"compress", TEXT, false, 1 << 20).expect("compress");
        assert_eq!(decoded.outcome, Outcome::Unsupported("compress".into()));
    }

    #[test]
    fn a_zstd_window_over_the_limit_is_refused() {
        // Frame header: magic, descriptor 0 (window descriptor present, no content size),
        // window descriptor 0xa8: exponent 21 -> 2^31 bytes.
        let body = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa8, 0x01, 0x00, 0x00];
        let decoded = decode(b"zstd", &body, false, 1 << 20).expect("zstd");
        assert!(
            matches!(decoded.outcome, Outcome::Failed(_)),
            "{:?}",
            decoded.outcome
        );
    }
}
