//! Why an upstream exchange broke off, in Envoy's words: the stream reset reason, the
//! response flag it gives and its response code details, before or after the response
//! started.

use crate::h1::H1Error;

/// Envoy's stream reset reasons for a connected HTTP/1.1 upstream (codec_client.cc
/// `onEvent`: a connection closed after a codec error resets its streams with
/// `ProtocolError`, any other close with `ConnectionTermination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetReason {
    /// The connection closed or failed mid-exchange (flag `UC`).
    ConnectionTermination,
    /// The upstream's answer is not HTTP/1.x (flag `UPE`).
    ProtocolError,
}

impl ResetReason {
    /// The reason for an error of an upstream exchange or of its response body: one
    /// that says the answer did not parse is a protocol error, any other a connection
    /// termination. The error's causes are looked through.
    pub(crate) fn of(error: &(dyn std::error::Error + 'static)) -> ResetReason {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if let Some(h1) = e.downcast_ref::<H1Error>() {
                return Self::of_h1(h1);
            }
            if e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_parse)
            {
                return ResetReason::ProtocolError;
            }
            // hyper's body decoder reports a bad chunk as invalid input or data; a TLS
            // failure is invalid data too, but a transport's failure, not the codec's.
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>())
                {
                    return ResetReason::ConnectionTermination;
                }
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                ) {
                    return ResetReason::ProtocolError;
                }
            }
            cause = e.source();
        }
        ResetReason::ConnectionTermination
    }

    /// The reason for a failure of this proxy's own HTTP/1.1 exchange (h1.rs).
    pub(crate) fn of_h1(error: &H1Error) -> ResetReason {
        match error {
            H1Error::Invalid(_) | H1Error::TooLarge => ResetReason::ProtocolError,
            H1Error::Unanswered | H1Error::Incomplete | H1Error::Io(_) => {
                ResetReason::ConnectionTermination
            }
        }
    }

    /// The response flag (`%RESPONSE_FLAGS%`).
    pub(crate) fn flag(self) -> &'static str {
        match self {
            ResetReason::ConnectionTermination => "UC",
            ResetReason::ProtocolError => "UPE",
        }
    }

    /// The reason in the words of Envoy's local reply body (`resetReasonToString`).
    pub(crate) fn words(self) -> &'static str {
        match self {
            ResetReason::ConnectionTermination => "connection termination",
            ResetReason::ProtocolError => "protocol error",
        }
    }

    /// `%RESPONSE_CODE_DETAILS%` when no response had started: Envoy answers 503.
    pub(crate) fn before_response(self) -> &'static str {
        match self {
            ResetReason::ConnectionTermination => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            ResetReason::ProtocolError => "upstream_reset_before_response_started{protocol_error}",
        }
    }

    /// `%RESPONSE_CODE_DETAILS%` when the response had started: Envoy resets the
    /// downstream stream and keeps the status it sent (router.cc `onUpstreamReset`).
    pub(crate) fn after_response(self) -> &'static str {
        match self {
            ResetReason::ConnectionTermination => {
                "upstream_reset_after_response_started{connection_termination}"
            }
            ResetReason::ProtocolError => "upstream_reset_after_response_started{protocol_error}",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_that_does_not_parse_is_a_protocol_error_and_a_close_a_termination() {
        let invalid = H1Error::Invalid("invalid chunk size");
        assert_eq!(ResetReason::of(&invalid), ResetReason::ProtocolError);
        assert_eq!(
            ResetReason::of(&H1Error::TooLarge),
            ResetReason::ProtocolError
        );
        assert_eq!(
            ResetReason::of(&H1Error::Incomplete),
            ResetReason::ConnectionTermination
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(ResetReason::of(&reset), ResetReason::ConnectionTermination);
        // Looked for among the causes, as a boxed body error carries it.
        let boxed: crate::body::BoxError = Box::new(invalid);
        assert_eq!(ResetReason::of(&*boxed), ResetReason::ProtocolError);
        let bad_chunk = std::io::Error::new(std::io::ErrorKind::InvalidInput, "chunk size");
        assert_eq!(ResetReason::of(&bad_chunk), ResetReason::ProtocolError);
        // A TLS alert read after the handshake: the transport failed, not the codec.
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        assert_eq!(ResetReason::of(&alert), ResetReason::ConnectionTermination);
    }
}
