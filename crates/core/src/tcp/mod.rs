//! TCP (RFC 9293 and friends). Being written; see the TCP issue.
