"""Trust in what others issue: external token issuers (federations), external CAs."""
