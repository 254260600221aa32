//! What ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) share: the 8-byte header
//! (type, code, checksum, four bytes whose meaning depends on the type) and
//! the echo messages' identifier and sequence number in those four bytes.
//! Both views are written by one macro so that their common accessors cannot
//! drift apart; each version adds its own checksum (ICMPv6's covers a pseudo
//! header) and type-specific fields in its own module.

use crate::bytes::set_u16;

/// Length of the header both versions share.
pub(crate) const ICMP_HEADER_LEN: usize = 8;

/// Defines a zero-copy ICMP view `$name<T>` with the accessors both versions
/// share. After its `new_checked` returns `Ok`, no accessor panics.
macro_rules! icmp_packet_view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// After [`new_checked`](Self::new_checked) returns `Ok`, no accessor panics.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without validating it.
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }
            /// Wraps a buffer, checking it holds the 8-byte header.
            pub fn new_checked(buffer: T) -> $crate::Result<Self> {
                if buffer.as_ref().len() < $crate::icmp::ICMP_HEADER_LEN {
                    return Err($crate::Error::Truncated);
                }
                Ok(Self::new_unchecked(buffer))
            }
            /// Returns the underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }
            /// Message type.
            pub fn msg_type(&self) -> u8 {
                self.buffer.as_ref()[0]
            }
            /// Message code.
            pub fn msg_code(&self) -> u8 {
                self.buffer.as_ref()[1]
            }
            /// Checksum field.
            pub fn checksum(&self) -> u16 {
                $crate::bytes::get_u16(self.buffer.as_ref(), 2)
            }
            /// Echo identifier (bytes 4..6).
            pub fn echo_ident(&self) -> u16 {
                $crate::bytes::get_u16(self.buffer.as_ref(), 4)
            }
            /// Echo sequence number (bytes 6..8).
            pub fn echo_seq_no(&self) -> u16 {
                $crate::bytes::get_u16(self.buffer.as_ref(), 6)
            }
            /// Bytes after the 8-byte header.
            pub fn data(&self) -> &[u8] {
                self.buffer.as_ref().get($crate::icmp::ICMP_HEADER_LEN..).unwrap_or(&[])
            }
        }

        impl<'a, T: AsRef<[u8]> + ?Sized> $name<&'a T> {
            /// Bytes after the header, borrowed for the buffer's lifetime.
            pub fn into_data(self) -> &'a [u8] {
                self.buffer.as_ref().get($crate::icmp::ICMP_HEADER_LEN..).unwrap_or(&[])
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Sets the type.
            pub fn set_msg_type(&mut self, v: u8) {
                self.buffer.as_mut()[0] = v;
            }
            /// Sets the code.
            pub fn set_msg_code(&mut self, v: u8) {
                self.buffer.as_mut()[1] = v;
            }
            /// Sets the checksum field.
            pub fn set_checksum(&mut self, v: u16) {
                $crate::bytes::set_u16(self.buffer.as_mut(), 2, v);
            }
            /// Sets the echo identifier.
            pub fn set_echo_ident(&mut self, v: u16) {
                $crate::bytes::set_u16(self.buffer.as_mut(), 4, v);
            }
            /// Sets the echo sequence number.
            pub fn set_echo_seq_no(&mut self, v: u16) {
                $crate::bytes::set_u16(self.buffer.as_mut(), 6, v);
            }
            /// Bytes after the header, mutably.
            pub fn data_mut(&mut self) -> &mut [u8] {
                self.buffer.as_mut().get_mut($crate::icmp::ICMP_HEADER_LEN..).unwrap_or(&mut [])
            }
        }
    };
}
pub(crate) use icmp_packet_view;

/// Writes an echo request or reply (code 0) of either version into `b`; the
/// checksum is the caller's, as its version computes it.
pub(crate) fn emit_echo(b: &mut [u8], msg_type: u8, ident: u16, seq_no: u16, data: &[u8]) {
    b[0] = msg_type;
    b[1] = 0;
    set_u16(b, 4, ident);
    set_u16(b, 6, seq_no);
    b[ICMP_HEADER_LEN..ICMP_HEADER_LEN + data.len()].copy_from_slice(data);
}
