//! Turning command-line arguments and stdin lines into frames.
//!
//! Each argument is one frame. `@path` takes the argument's text from a file (`@@x`
//! is the literal `@x`); then the encoding applies: raw bytes by default, `--hex`,
//! `--base64`, or `--json` (a JSON value sent as MessagePack). A lone `-` means: one
//! message per stdin line, each line decoded the same way.

use std::io::BufRead;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use lwmq::{Bytes, Message};

use crate::cli::InputOpts;
use crate::error::usage;

/// How a frame's text is turned into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// The bytes as given.
    #[default]
    Raw,
    /// Hexadecimal digits (white space ignored).
    Hex,
    /// Base64, padded or not (white space ignored).
    Base64,
    /// A JSON value, encoded as MessagePack.
    Json,
}

impl From<&InputOpts> for Encoding {
    fn from(o: &InputOpts) -> Encoding {
        if o.hex {
            Encoding::Hex
        } else if o.base64 {
            Encoding::Base64
        } else if o.json {
            Encoding::Json
        } else {
            Encoding::Raw
        }
    }
}

/// Where the messages to send come from.
#[derive(Debug)]
pub enum Input {
    /// No frame arguments.
    Nothing,
    /// One message, from the arguments.
    Message(Message),
    /// One message per stdin line.
    StdinLines,
}

/// Reads the frame arguments.
pub fn from_args(args: &[String], enc: Encoding) -> Result<Input> {
    if args.is_empty() {
        return Ok(Input::Nothing);
    }
    if args.iter().any(|a| a == "-") {
        if args.len() != 1 {
            return Err(usage(
                "- (messages from stdin) cannot be mixed with frame arguments",
            ));
        }
        return Ok(Input::StdinLines);
    }
    let mut msg = Message::new();
    for (i, arg) in args.iter().enumerate() {
        let text = arg_text(arg)?;
        let frame = decode(&text, enc).with_context(|| format!("frame {}", i + 1))?;
        msg.push(frame);
    }
    Ok(Input::Message(msg))
}

/// An argument's text: the argument, or the contents of the file it names with `@`.
fn arg_text(arg: &str) -> Result<Vec<u8>> {
    if let Some(rest) = arg.strip_prefix("@@") {
        return Ok(format!("@{rest}").into_bytes());
    }
    if let Some(path) = arg.strip_prefix('@') {
        if path.is_empty() {
            return Err(usage("@ needs a file name (@@ is a literal @)"));
        }
        return std::fs::read(path).with_context(|| format!("cannot read {path}"));
    }
    Ok(arg.as_bytes().to_vec())
}

/// Decodes one frame's text.
pub fn decode(text: &[u8], enc: Encoding) -> Result<Bytes> {
    match enc {
        Encoding::Raw => Ok(Bytes::copy_from_slice(text)),
        Encoding::Hex => {
            let digits: Vec<u8> = text
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            if digits.len() % 2 != 0 {
                bail!("hex has an odd number of digits ({})", digits.len());
            }
            let nibble = |b: u8| -> Result<u8> {
                match b {
                    b'0'..=b'9' => Ok(b - b'0'),
                    b'a'..=b'f' => Ok(b - b'a' + 10),
                    b'A'..=b'F' => Ok(b - b'A' + 10),
                    _ => bail!("{:?} is not a hex digit", char::from(b)),
                }
            };
            let mut out = Vec::with_capacity(digits.len() / 2);
            for pair in digits.chunks_exact(2) {
                out.push(nibble(pair[0])? << 4 | nibble(pair[1])?);
            }
            Ok(out.into())
        }
        Encoding::Base64 => {
            let clean: Vec<u8> = text
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            Ok(engine
                .decode(&clean)
                .map_err(|e| anyhow::anyhow!("invalid base64: {e}"))?
                .into())
        }
        Encoding::Json => {
            let text = std::str::from_utf8(text).context("JSON must be UTF-8")?;
            Ok(crate::typed::json_text_to_msgpack(text)?.into())
        }
    }
}

/// One message per line of `reader`: the line without its `\n` (or `\r\n`), decoded.
/// With [`Encoding::Json`], blank lines are skipped.
pub fn lines<R: BufRead>(mut reader: R, enc: Encoding) -> impl Iterator<Item = Result<Message>> {
    let mut line_no = 0u64;
    std::iter::from_fn(move || {
        loop {
            let mut line = Vec::new();
            line_no += 1;
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(anyhow::Error::from(e).context("reading stdin"))),
            }
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            if enc == Encoding::Json && line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(
                decode(&line, enc)
                    .map(Message::from)
                    .with_context(|| format!("stdin line {line_no}")),
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(args: &[&str], enc: Encoding) -> Result<Vec<Bytes>> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match from_args(&args, enc)? {
            Input::Message(m) => Ok(m.into_frames()),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(
            one(&["a", "", "b c"], Encoding::Raw).unwrap(),
            ["a", "", "b c"]
        );
        assert_eq!(
            one(&["00ff 10", "AB"], Encoding::Hex).unwrap(),
            [&[0, 255, 16][..], &[0xab]]
        );
        assert_eq!(
            one(&["aGk=", "aGk"], Encoding::Base64).unwrap(),
            ["hi", "hi"]
        );
        assert_eq!(one(&["[1]"], Encoding::Json).unwrap(), [&[0x91, 1][..]]);
        let e = format!("{:#}", one(&["ab", "abc"], Encoding::Hex).unwrap_err());
        assert!(e.contains("frame 2") && e.contains("odd"), "{e}");
        let e = format!("{:#}", one(&["zz"], Encoding::Hex).unwrap_err());
        assert!(e.contains("not a hex digit"), "{e}");
        assert!(one(&["!!"], Encoding::Base64).is_err());
        assert!(one(&["{"], Encoding::Json).is_err());
    }

    #[test]
    fn files_and_stdin_markers() {
        let dir = std::env::temp_dir().join(format!("lwmq-cli-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"\x00bin\n").unwrap();
        let arg = format!("@{}", file.display());
        assert_eq!(
            one(&[&arg, "@@x"], Encoding::Raw).unwrap(),
            [&b"\x00bin\n"[..], b"@x"]
        );
        std::fs::write(&file, b"{\"k\": 1}\n").unwrap();
        assert_eq!(
            one(&[&arg], Encoding::Json).unwrap(),
            [&[0x81, 0xa1, b'k', 1][..]]
        );
        let e = format!(
            "{:#}",
            one(&["@/nonexistent/x"], Encoding::Raw).unwrap_err()
        );
        assert!(e.contains("cannot read /nonexistent/x"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(matches!(
            from_args(&["-".into()], Encoding::Raw),
            Ok(Input::StdinLines)
        ));
        assert!(matches!(from_args(&[], Encoding::Raw), Ok(Input::Nothing)));
        let e = from_args(&["-".into(), "x".into()], Encoding::Raw).unwrap_err();
        assert!(crate::error::is_usage(&e));
    }

    #[test]
    fn stdin_lines() {
        let msgs: Vec<Message> = lines(&b"a\r\n\nb"[..], Encoding::Raw)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            msgs,
            [Message::from("a"), Message::from(""), Message::from("b")]
        );
        let json: Vec<Result<Message>> = lines(&b"1\n\n  \n[\n"[..], Encoding::Json).collect();
        assert_eq!(json.len(), 2);
        assert_eq!(json[0].as_ref().unwrap(), &Message::from(vec![1u8]));
        let e = format!("{:#}", json[1].as_ref().unwrap_err());
        assert!(e.contains("stdin line 4"), "{e}");
    }
}
