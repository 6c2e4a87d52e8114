"""casegate's milter: runs inside Postfix's smtpd, decides before the queue."""
