//! Why a received frame or message was dropped: every reason is a
//! counter, and nothing malformed panics or is answered.

/// Why a received frame or message was dropped. Each is a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    Truncated,
    NotIpv4,
    NotUdp,
    Fragment,
    BadIpHeader,
    BadChecksum,
    BadUdpLength,
    TooShort,
    NotBootRequest,
    BadHardwareLength,
    NoMagicCookie,
    OptionOverrun,
    OptionOverload,
    BadOptionLength,
    NoMessageType,
    BadMessageType,
}

impl Malformed {
    pub const ALL: [Malformed; 16] = [
        Malformed::Truncated,
        Malformed::NotIpv4,
        Malformed::NotUdp,
        Malformed::Fragment,
        Malformed::BadIpHeader,
        Malformed::BadChecksum,
        Malformed::BadUdpLength,
        Malformed::TooShort,
        Malformed::NotBootRequest,
        Malformed::BadHardwareLength,
        Malformed::NoMagicCookie,
        Malformed::OptionOverrun,
        Malformed::OptionOverload,
        Malformed::BadOptionLength,
        Malformed::NoMessageType,
        Malformed::BadMessageType,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Malformed::Truncated => "truncated",
            Malformed::NotIpv4 => "not_ipv4",
            Malformed::NotUdp => "not_udp",
            Malformed::Fragment => "fragment",
            Malformed::BadIpHeader => "bad_ip_header",
            Malformed::BadChecksum => "bad_checksum",
            Malformed::BadUdpLength => "bad_udp_length",
            Malformed::TooShort => "too_short",
            Malformed::NotBootRequest => "not_bootrequest",
            Malformed::BadHardwareLength => "bad_hardware_length",
            Malformed::NoMagicCookie => "no_magic_cookie",
            Malformed::OptionOverrun => "option_overrun",
            Malformed::OptionOverload => "option_overload",
            Malformed::BadOptionLength => "bad_option_length",
            Malformed::NoMessageType => "no_message_type",
            Malformed::BadMessageType => "bad_message_type",
        }
    }
}
