"""caskit: a test harness for the POWER9 KVM interrupt controllers.

XICS (eXternal Interrupt Controller Specification) is the POWER7/8 model; XIVE (eXternal
Interrupt Virtualization Engine) is POWER9's. A pseries guest picks one at boot through CAS
(Client Architecture Support). caskit predicts the outcome, boots real guests, observes what
they negotiated, and reports the difference.
"""

__version__ = "0.1.0"
