"""Character sheets, all in this package: `compose` (the /sheet image composed from a character's references),
`generate` (a sheet asked of an image provider, queued like a shot, its figures kept as views) and `split`
(finding and naming the figures on a generated sheet)."""
