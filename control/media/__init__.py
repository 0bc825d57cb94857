"""Media: RTP/RTCP, codecs, SRTP, jitter buffer, and the audio engines."""
