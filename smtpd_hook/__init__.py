"""casegate's content filter: the aiosmtpd server behind Postfix."""
