//! ZMTP 3.1 (RFC 37) with downgrade to 3.0 (RFC 23), as a sans-IO state machine.
