//! Just enough of RESP3, Redis' wire protocol, for the near cache's own
//! connection ([`super::near`]): commands out, replies and push messages in.
//!
//! fred delivers invalidation messages on a channel apart from the replies,
//! so a reply and the invalidation that follows it on the wire can be handled
//! in either order. The near cache needs the wire's order, so it reads its
//! connection itself, with this parser.
//!
//! Why ours and not `redis-protocol`'s codec (the one fred uses): on the
//! frames this connection reads, fed whole, it parses several times faster,
//! and it bounds nesting, where that codec recurses for every level a server
//! sends (a reply nested 1 000 deep overflowed a 2 MiB stack in a debug
//! build, which aborts the process). `cargo bench --bench resp_frames`
//! (2-core development machine, both in one run, median per frame; that
//! codec into its owned frames, and into `Bytes` frames):
//!
//! | frame                       | ours    | owned   | `Bytes` |
//! |-----------------------------|---------|---------|---------|
//! | `GET` reply, 300 bytes      | 33 ns   | 166 ns  | 158 ns  |
//! | `invalidate` push, 1 key    | 122 ns  | 721 ns  | 664 ns  |
//! | `invalidate` push, 50 keys  | 2.57 µs | 9.16 µs | 8.52 µs |
//! | `+PONG`                     | 28 ns   | 142 ns  | 138 ns  |

/// One RESP3 frame, with the types the near cache tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    /// `+OK`, and the scalar types read as text (`:`, `#`, `,`, `(`).
    Simple(String),
    /// `-ERR ...` or a blob error.
    Error(String),
    /// A bulk or verbatim string.
    Bulk(Vec<u8>),
    /// `_`, or a null bulk string or array.
    Null,
    /// An array, set or map (a map as its keys and values in turn).
    Array(Vec<Frame>),
    /// An out-of-band push message (`>`), such as `invalidate`.
    Push(Vec<Frame>),
}

/// The bytes are not RESP.
#[derive(Debug, thiserror::Error)]
#[error("protocol error: {0}")]
pub(super) struct ProtocolError(&'static str);

/// Deepest nesting accepted (replies here nest two levels).
const MAX_DEPTH: usize = 8;

/// Appends one command (an array of bulk strings) to `out`.
pub(super) fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses the frame at the start of `buf`: the frame and the bytes it took,
/// or `None` while it is incomplete.
pub(super) fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let mut at = 0;
    Ok(frame(buf, &mut at, 0)?.map(|frame| (frame, at)))
}

fn frame(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Frame>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("nested too deeply"));
    }
    // A loop, for attributes: each describes the frame that follows it and is
    // skipped, and any number of them may come first. Skipped by a recursive
    // call at the same depth, a reply of a few thousand of them overflowed
    // the stack.
    loop {
        let Some(line) = line(buf, at)? else {
            return Ok(None);
        };
        let (kind, rest) = line.split_first().ok_or(ProtocolError("empty line"))?;
        let text = || String::from_utf8_lossy(rest).into_owned();
        return Ok(Some(match kind {
            b'+' | b':' | b'#' | b',' | b'(' => Frame::Simple(text()),
            b'-' => Frame::Error(text()),
            b'_' => Frame::Null,
            b'$' | b'=' | b'!' => {
                let Some(len) = length(rest)? else {
                    return Ok(Some(Frame::Null));
                };
                // A hostile length cannot overflow: past Redis's own limit on a
                // bulk string (512 MiB) it is an error.
                if len > MAX_BULK {
                    return Err(ProtocolError("bulk length out of range"));
                }
                let end = *at + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError("bulk string not terminated"));
                }
                let body = buf[*at..end].to_vec();
                *at = end + 2;
                if *kind == b'!' {
                    Frame::Error(String::from_utf8_lossy(&body).into_owned())
                } else {
                    Frame::Bulk(body)
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let Some(count) = length(rest)? else {
                    return Ok(Some(Frame::Null));
                };
                let count = if matches!(kind, b'%' | b'|') {
                    count
                        .checked_mul(2)
                        .ok_or(ProtocolError("map length out of range"))?
                } else {
                    count
                };
                let mut items = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    let Some(item) = frame(buf, at, depth + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                }
                match kind {
                    b'>' => Frame::Push(items),
                    b'|' => continue,
                    _ => Frame::Array(items),
                }
            }
            _ => return Err(ProtocolError("unknown frame type")),
        }));
    }
}

/// The next line of `buf` from `at`, without its CRLF; `at` moves past it.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, ProtocolError> {
    let rest = buf.get(*at..).unwrap_or_default();
    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    *at += end + 2;
    Ok(Some(&rest[..end]))
}

/// The longest bulk string Redis sends (its `proto-max-bulk-len` default).
const MAX_BULK: usize = 512 << 20;

/// A length or count; `None` for -1 (null).
fn length(digits: &[u8]) -> Result<Option<usize>, ProtocolError> {
    if digits == b"-1" {
        return Ok(None);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or(ProtocolError("bad length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some((frame, used)) = parse(&bytes[at..]).unwrap() {
            frames.push(frame);
            at += used;
        }
        assert_eq!(at, bytes.len(), "bytes left over");
        frames
    }

    #[test]
    fn encodes_a_command() {
        let mut out = Vec::new();
        command(&mut out, &[b"GET", b"wm:k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$4\r\nwm:k\r\n");
    }

    #[test]
    fn parses_replies_and_pushes_in_wire_order() {
        let wire = b"+PONG\r\n$5\r\n7:{}a\r\n_\r\n$-1\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$4\r\nwm:k\r\n-ERR no\r\n";
        assert_eq!(
            all(wire),
            vec![
                Frame::Simple("PONG".into()),
                Frame::Bulk(b"7:{}a".to_vec()),
                Frame::Null,
                Frame::Null,
                Frame::Push(vec![
                    Frame::Bulk(b"invalidate".to_vec()),
                    Frame::Array(vec![Frame::Bulk(b"wm:k".to_vec())]),
                ]),
                Frame::Error("ERR no".into()),
            ]
        );
    }

    #[test]
    fn parses_a_hello_map_and_a_flush_push() {
        let wire = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n>2\r\n$10\r\ninvalidate\r\n_\r\n";
        let frames = all(wire);
        assert_eq!(
            frames[0],
            Frame::Array(vec![
                Frame::Bulk(b"server".to_vec()),
                Frame::Bulk(b"redis".to_vec()),
                Frame::Bulk(b"proto".to_vec()),
                Frame::Simple("3".into()),
            ])
        );
        assert_eq!(
            frames[1],
            Frame::Push(vec![Frame::Bulk(b"invalidate".to_vec()), Frame::Null])
        );
    }

    #[test]
    fn waits_for_an_incomplete_frame_at_every_cut() {
        let wire = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$4\r\nwm:a\r\n$4\r\nwm:b\r\n";
        for cut in 0..wire.len() {
            assert!(parse(&wire[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert!(parse(wire).unwrap().is_some());
    }

    #[test]
    fn any_number_of_attributes_before_a_frame_fits_a_small_stack() {
        // Each attribute was skipped by a recursive call, so 800 of them
        // (3 200 bytes) overflowed the 256 KiB stack of the fuzz target
        // `resp`, and some thousands a tokio worker's 2 MiB: a server could
        // abort the process with one reply.
        let mut wire = b"|1\r\n+ttl\r\n:3\r\n".repeat(200);
        wire.extend_from_slice(&b"|0\r\n".repeat(100_000));
        wire.extend_from_slice(b"+OK\r\n");
        let parsed = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let whole = parse(&wire).unwrap();
                let cut = parse(&wire[..wire.len() - 1]).unwrap();
                (whole, cut, wire.len())
            })
            .unwrap()
            .join()
            .unwrap();
        let (whole, cut, len) = parsed;
        assert_eq!(whole, Some((Frame::Simple("OK".into()), len)));
        assert_eq!(cut, None);
    }

    #[test]
    fn refuses_what_is_not_resp() {
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b"$3\r\nabcd\r\n").is_err());
        assert!(parse(b"*x\r\n").is_err());
        // Hostile lengths are errors, not overflows.
        assert!(parse(b"$18446744073709551615\r\nab\r\n").is_err());
        assert!(parse(b"%9223372036854775808\r\n").is_err());
        assert!(parse(b"|18446744073709551615\r\n").is_err());
    }
}
