//! Server-sent events decoded from bytes: the one decoder every live stream goes through.
//!
//! Bytes are buffered until a whole line has arrived, and only a whole line is turned into
//! text. A multi-byte UTF-8 character (or a `\r\n`) split across TCP chunks therefore
//! decodes exactly: line ends are ASCII, so a complete line of valid UTF-8 is valid UTF-8.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::error::{LlmError, Result};
use crate::types::StreamDelta;

/// One event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (Anthropic names its events; OpenAI does not).
    pub event: Option<String>,
    /// The `data:` lines of the event, joined by `\n` as the SSE spec says.
    pub data: String,
}

/// Incremental SSE decoder over a byte buffer.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseDecoder {
    /// Feeds `chunk`; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[start..].iter().position(|b| *b == b'\n') {
            let end = start + offset;
            let line = self.buffer[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.buffer[start..end]);
            // Invalid UTF-8 in a whole line is the upstream's fault, not a split: decoded
            // lossily rather than dropping the event.
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            start = end + 1;
        }
        self.buffer.drain(..start);
        events
    }

    /// Bytes received after the last complete line (non-empty when a stream was cut).
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_data && self.current.event.is_none() {
                return None;
            }
            self.has_data = false;
            return Some(std::mem::take(&mut self.current));
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = Some(value.to_owned()),
            // Comments (`: keep-alive`), `id:` and `retry:` carry nothing we route on.
            _ => {}
        }
        None
    }
}

/// What one wire format makes of one SSE event: its deltas (or an error) into the queue;
/// true when the stream is over.
pub(crate) type EventParser = fn(&SseEvent, &str, &mut VecDeque<Result<StreamDelta>>) -> bool;

/// An SSE byte stream into deltas, each event read by `parse` (one per wire format). A
/// stream that ends before `parse` said it is over, or whose transport fails, yields a
/// final [`LlmError::Stream`].
pub(crate) fn event_deltas<S>(
    bytes: S,
    endpoint: String,
    parse: EventParser,
) -> impl Stream<Item = Result<StreamDelta>> + Send
where
    S: Stream<Item = std::result::Result<Bytes, String>> + Send + 'static,
{
    struct State<S> {
        bytes: std::pin::Pin<Box<S>>,
        decoder: SseDecoder,
        pending: VecDeque<Result<StreamDelta>>,
        finished: bool,
        endpoint: String,
    }
    let state = State {
        bytes: Box::pin(bytes),
        decoder: SseDecoder::default(),
        pending: VecDeque::new(),
        finished: false,
        endpoint,
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(item) = st.pending.pop_front() {
                return Some((item, st));
            }
            if st.finished {
                return None;
            }
            let failure = match st.bytes.next().await {
                Some(Ok(chunk)) => {
                    for event in st.decoder.push(&chunk) {
                        if st.finished {
                            break;
                        }
                        st.finished = parse(&event, &st.endpoint, &mut st.pending);
                    }
                    continue;
                }
                Some(Err(message)) => message,
                None => "stream ended before its end event".into(),
            };
            st.pending.push_back(Err(LlmError::Stream {
                endpoint: st.endpoint.clone(),
                message: failure,
            }));
            st.finished = true;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_in_two(raw: &[u8], at: usize) -> Vec<SseEvent> {
        let mut d = SseDecoder::default();
        let mut out = d.push(&raw[..at]);
        out.extend(d.push(&raw[at..]));
        out
    }

    #[test]
    fn events_fields_and_comments() {
        let raw =
            b": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: x\ndata: y\r\n\r\n";
        let events = SseDecoder::default().push(raw);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("message_start".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: None,
                    data: "x\ny".into()
                },
            ]
        );
    }

    proptest! {
        /// Every multi-byte character split at every byte offset decodes exactly.
        #[test]
        fn a_split_at_any_byte_decodes_exactly(
            text in "[a-z café中文😀ñ\u{10348}]{0,24}",
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let raw = format!("data: {text}{nl}{nl}data: [DONE]{nl}{nl}");
            let raw = raw.as_bytes();
            for at in 0..=raw.len() {
                let events = decode_in_two(raw, at);
                prop_assert_eq!(events.len(), 2);
                prop_assert_eq!(&events[0].data, &text);
                prop_assert_eq!(&events[1].data, "[DONE]");
            }
        }

        /// Any chunking of a stream, down to single bytes, gives the same events.
        #[test]
        fn any_chunking_gives_the_same_events(
            text in "[a-z é中😀]{0,16}",
            sizes in proptest::collection::vec(1usize..5, 1..64),
        ) {
            let raw = format!("event: e\ndata: {text}\n\ndata: {text}{text}\n\n");
            let raw = raw.as_bytes();
            let whole = SseDecoder::default().push(raw);
            let mut d = SseDecoder::default();
            let (mut at, mut got, mut i) = (0, Vec::new(), 0);
            while at < raw.len() {
                let n = sizes[i % sizes.len()].min(raw.len() - at);
                got.extend(d.push(&raw[at..at + n]));
                at += n;
                i += 1;
            }
            prop_assert_eq!(got, whole);
        }
    }
}
