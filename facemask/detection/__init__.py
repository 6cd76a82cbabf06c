"""Face finding: the finders (YuNet, CenterFace, the trained FCOS), their operating points
(finder files), fusion, box refinement, the no-face re-scorer and scene scoring."""
