"""Structured records: a value whose key says what it is is sensitive whatever its shape.

``{"dob": "14/03/85"}``, ``ssn=123456789``, ``Patient name: ana lima``, a CSV file whose
header row reads ``name,dob,ssn``: the format recognizers need a recognisable shape, but
here the key already names the value. Forms read:

* JSON and Python literals: ``"key": "value"``, ``'key': 'value'``, ``"key": 12345``
  (escaped JSON inside a string works: the normalizer decodes ``\\"`` and ``\\uXXXX``);
* ``key=value`` (query strings ``?ssn=…&dob=…``, env files, logs), quoted or not;
* ``Key: value`` (YAML, e-mail and form headers, "DOB: …" in a note): at a line start
  the value runs to the line end (or to the next ``, Key:``); mid-line to the next
  ``,``, ``;`` or ``|``;
* delimited tables: a header row of 2+ fields (``,``, ``;``, tab or ``|``, Markdown
  tables too) naming at least one known key, and the rows under it up to the first
  blank line or row of another width: every cell under a known key.

A key is known after lower-casing and dropping separators (``date_of_birth``,
``birthDate``, ``Date of Birth``, ``DATE-OF-BIRTH`` → ``dateofbirth``), optionally
behind words that only say whose value it is (``patient_dob``, ``home_phone``,
``Patient's date of birth``); ``file_name``, ``server_address`` or ``host_ip`` are not
people's. The value span is the value only (no key, no quotes); empty values,
``null``/``None``/``N/A``/``-``, booleans, masks (``***``, ``XXXX``) and placeholders
(``<PERSON_1>``, ``[REDACTED]``, ``{{name}}``, ``${SSN}``) are no findings.

Key → entity type (:data:`KEY_ENTITIES`): names → ``PERSON``; birth dates →
``DATE_OF_BIRTH``; addresses → ``STREET_ADDRESS``; ZIP/postcodes → ``POSTCODE``;
``PASSPORT``, ``US_SSN``, ``NATIONAL_ID`` (NI number, tax and national ids), ``MRN``,
``HEALTH_PLAN_ID`` (member, policy, insurance ids), ``PHONE_NUMBER``, ``EMAIL_ADDRESS``,
``ACCOUNT_NUMBER`` (bank accounts, IBAN, card numbers), ``LICENSE_NUMBER``,
``LICENSE_PLATE``, ``VIN``, ``DEVICE_ID`` (serials, IMEI, device ids), ``IP_ADDRESS``;
other identifying keys (user, employee and customer ids, usernames, certificate
numbers…) → ``RECORD_VALUE``.
"""

from __future__ import annotations

import re
from typing import Any

from presidio_analyzer import RecognizerResult

from edgewise.privacy.recognizers.base import RegexRecognizer

__all__ = ["KEY_ENTITIES", "RecordsRecognizer", "key_entity"]


def _words(text: str) -> list[str]:
    return text.split()


def _keys(entity: str, names: str) -> dict[str, str]:
    return {n: entity for n in _words(names)}


#: Normalized key (lower case, letters and digits only) → entity type.
KEY_ENTITIES: dict[str, str] = {
    **_keys("PERSON", """name fullname firstname lastname surname givenname familyname
        middlename maidenname fname lname forename forenames patientname
        customername clientname contactname employeename membername personname
        cardholder cardholdername accountholder accountholdername guardian guardianname
        mothername mothersname fathername fathersname spousename nextofkin
        emergencycontact emergencycontactname insuredname subscribername sendername
        recipientname beneficiaryname ptname nombre apellido apellidos nom prenom
        vorname nachname cognome nomecompleto familienname geburtsname nomdefamille
        nomdenaissance nombrecompleto primerapellido segundoapellido nome sobrenome
        apelido nomedefamilia voornaam achternaam naam familienaam"""),
    **_keys("DATE_OF_BIRTH", """dob dateofbirth birthdate birthday birthdt bdate
        dobdate geburtsdatum fechadenacimiento datadinascita datedenaissance
        fechanacimiento geburtstag gebdatum geboortedatum datadenascimento
        datanascimento datanascita ddn fnac fechanac"""),
    **_keys("STREET_ADDRESS", """address addr streetaddress street street1 street2
        homeaddress mailingaddress postaladdress billingaddress shippingaddress
        deliveryaddress residentialaddress residenceaddress residence address1 address2
        address3 addressline addressline1 addressline2 adresse anschrift direccion
        indirizzo strasse straße domicile wohnort wohnadresse hausnummer
        adressepostale domicilio calle endereco morada rua residencia adres
        woonadres straat huisnummer"""),
    **_keys("POSTCODE", """zip zipcode zip4 postcode postalcode postleitzahl plz
        codepostal codigopostal cap cep codicepostale postcodenummer"""),
    **_keys("PASSPORT", """passport passportno passportnumber passportnum passportid
        reisepass reisepassnummer passnummer passeport numerodepasseport pasaporte
        numerodepasaporte passaporto numerodipassaporto passaporte paspoort
        paspoortnummer"""),
    **_keys("US_SSN", """ssn socialsecurity socialsecuritynumber socialsecurityno
        ssnnumber socsec"""),
    **_keys("NATIONAL_ID", """nino nationalinsurance nationalinsurancenumber nationalid
        nationalidnumber nationalidentifier taxid taxidnumber tin taxnumber taxpayerid
        idnumber idcard idcardnumber personalnumber personnummer bsn dni nie nif
        codicefiscale steuerid insee nir citizenid aadhaar sin personalid
        steueridentifikationsnummer sozialversicherungsnummer svnr personalausweis
        ausweisnummer numerodesecuritesociale numerosecu nss nuss numeroseguridadsocial
        numerofiscale cartaidentita nifnumber niss burgerservicenummer
        sofinummer"""),
    **_keys("MRN", """mrn medicalrecordnumber medicalrecordno medicalrecord patientid
        patientnumber patientno chartnumber chartno hospitalnumber mrnumber
        patientennummer patientenid fallnummer numerodossier numerodedossier ipp
        numerohistoria historiaclinica nhc numerocartella cartellaclinica prontuario
        numeroprontuario processoclinico patientnummer patientid dossiernummer"""),
    **_keys("HEALTH_PLAN_ID", """memberid membernumber memberno policynumber policyno
        policyid insuranceid insurancenumber healthplanid healthplan subscriberid
        versichertennummer krankenversicherungsnummer krankenkassennummer
        numerodemutuelle mutuelle numerodeafiliacion tarjetasanitaria
        numeroutente numerodeutente polisnummer verzekeringsnummer
        groupnumber medicaidid medicareid medicarenumber beneficiaryid planid"""),
    **_keys("PHONE_NUMBER", """phone phonenumber phoneno tel telephone mobile
        mobilephone mobilenumber cell cellphone fax faxnumber homephone workphone
        contactnumber telefono telefon handy telefonnummer handynummer mobil
        mobilnummer rufnummer telephonefixe portable numerodetelephone movil celular
        numerodetelefono cellulare numeroditelefono telefone telemovel telefoon
        telefoonnummer mobiel mobielnummer"""),
    **_keys("EMAIL_ADDRESS", """email emailaddress mail mailaddress contactemail courriel
        correo correoelectronico posta postaelettronica"""),
    **_keys("ACCOUNT_NUMBER", """account accountno accountnumber accountnum acct acctno
        acctnumber bankaccount bankaccountnumber iban routingnumber sortcode card
        cardnumber cardno creditcard creditcardnumber ccnumber ccnum pan bic"""),
    **_keys("LICENSE_NUMBER", """license licence licenseno licenceno licensenumber
        licencenumber driverslicense driverlicense driverslicence drivinglicence
        drivinglicense dlnumber dlno certificatenumber certificateno"""),
    **_keys("LICENSE_PLATE", """plate licenseplate licenceplate numberplate platenumber
        plateno registrationnumber regno vehicleregistration kennzeichen matricula
        targa"""),
    **_keys("VIN", "vin vinnumber vehicleidentificationnumber chassisnumber"),
    **_keys("DEVICE_ID", """deviceid deviceserial serial serialnumber serialno imei meid
        udid androidid idfa advertisingid implantserial macaddress"""),
    **_keys("IP_ADDRESS", """ip ipaddress ipaddr ipv4 ipv6 clientip remoteip remoteaddr
        userip sourceip srcip"""),
    **_keys("RECORD_VALUE", """username userid login loginname customerid customerno
        customernumber clientid employeeid employeeno employeenumber staffid studentid
        studentnumber badgenumber badgeid personid voterid claimnumber claimid
        caseid casenumber accountid biometric fingerprint"""),
}
# Words that only say whose value a key holds: "patient_dob", "home_phone".
_OWNERS = frozenset(_words("""patient pt user customer client member employee contact
    emergency home work personal primary secondary billing shipping mailing current
    permanent mother father spouse guardian insured subscriber holder applicant
    student owner sender recipient my his her their the your s legal full
    preferred alt alternate other main"""))
_PLACEHOLDER = re.compile(
    r"(?i)(?:null|none|nil|undefined|n/?a|n\.a\.?|-+|\?+|tbd|unknown|redacted|"
    r"true|false|yes|no|[*#•\-\s./]*[*#•][*#•\-\s./xX]*|x{3,}(?:[\-\s./]x+)*|"
    r"<[^<>]*>|\[[^\[\]]*\]|\{\{.*\}\}|\$\{[^}]*\}|%\([^)]*\)s|%s|\.{3}|…|_+)")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _tokens(key: str) -> list[str]:
    return [t for t in re.split(r"[^0-9a-zäöüß]+", _CAMEL.sub(" ", key).lower()) if t]


def key_entity(key: str) -> str | None:
    """The entity type a record key names, or None (see the module docstring)."""
    tokens = _tokens(key)
    for i in range(len(tokens)):
        if all(t in _OWNERS for t in tokens[:i]):
            entity = KEY_ENTITIES.get("".join(tokens[i:]))
            if entity is not None:
                return entity
    return None


def _value_ok(value: str) -> bool:
    v = value.strip()
    return bool(v) and not _PLACEHOLDER.fullmatch(v)


_KEY = r"[A-Za-z][A-Za-z0-9äöüß]*(?:[ _.\-'’][A-Za-z0-9äöüß]+){0,5}"
# "key": "value" / 'key': 'value' / "key": 123
# (a lookahead, so matches may overlap: in ``"args": "{"dob": …}"`` — an escaped object
# in a string, decoded by the normalizer — the outer value's quote opens the inner key)
_JSON = re.compile(
    r"(?=(?P<q>[\"'])(?P<k>[A-Za-z][\w .\-]{0,40})(?P=q)\s*:\s*"
    r"(?:(?P<vq>[\"'])(?P<v>(?:(?!(?P=vq))[^\\\n]|\\.){0,500})(?P=vq)"
    r"|(?P<n>-?\d[\d.\-]{0,40})(?![\w.])))")
# key=value, key="value"
_ASSIGN = re.compile(
    r"(?<![\w.\-])(?P<k>[A-Za-z][\w.\-]{0,40})\s*=\s*"
    r"(?:(?P<vq>[\"'])(?P<v>[^\"'\n]{0,500})(?P=vq)|(?P<u>[^\s&;,\"'#]{1,500}))")
# Key: (the value is the rest of the line, cut below)
_COLON = re.compile(
    r"(?:(?m:^)[ \t>*\-]*|(?<=[,;|({\t])[ \t]*|(?<=  ))"
    r"(?P<k>" + _KEY + r")[ \t]*(?::|：)(?![/:])[ \t]*")
_NEXT_KEY = re.compile(r"\s*,\s*" + _KEY + r"\s*:(?![/:])|\s*[;|]|\s{3,}|\t")
# Values with a shape (numbers, codes, e-mail): the first token and further tokens that
# hold a digit ("123 45 6789", "(212) 555-0199"), so prose after it is not taken along.
_FREE_TEXT = frozenset({"PERSON", "STREET_ADDRESS"})
_TOKENS = re.compile(r"[^\s,;|]+(?:[ ](?=[^\s,;|]*\d)[^\s,;|]+)*")
_INLINE_END = re.compile(r"\s*[,;|]")
_ROW_DELIMITERS = (",", "\t", ";", "|")


class RecordsRecognizer(RegexRecognizer):
    """Key-named values in JSON, ``key=value``, ``Key: value`` and delimited tables."""

    def __init__(self) -> None:
        super().__init__("EdgewiseRecordsRecognizer", [])
        self.supported_entities = sorted(set(KEY_ENTITIES.values()))

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                ) -> list[RecognizerResult]:
        wanted = set(entities) if entities else set(self.supported_entities)
        spans: dict[tuple[int, int], tuple[str, float, str]] = {}

        def add(key: str, start: int, end: int, score: float, rule: str) -> None:
            entity = key_entity(key)
            value = text[start:end]
            # trim whitespace and a trailing comma or period
            while end > start and text[end - 1] in " \t\r,.":
                end -= 1
            while start < end and text[start] in " \t":
                start += 1
            value = text[start:end]
            if entity is None or entity not in wanted or not _value_ok(value):
                return
            if (start, end) not in spans or spans[(start, end)][1] < score:
                spans[(start, end)] = (entity, score, rule)

        for m in _JSON.finditer(text):
            group = "v" if m.group("vq") else "n"
            add(m.group("k"), m.start(group), m.end(group), 0.8, "json key")
        for m in _ASSIGN.finditer(text):
            group = "v" if m.group("vq") else "u"
            add(m.group("k"), m.start(group), m.end(group), 0.8, "key=value")
        for m in _COLON.finditer(text):
            start = m.end()
            end = text.find("\n", start)
            end = len(text) if end < 0 else end
            if start >= end:
                continue
            line = text.rfind("\n", 0, m.start("k")) + 1
            line_start = not text[line:m.start("k")].strip(" \t>*-")
            cut = (_NEXT_KEY if line_start else _INLINE_END).search(text, start, end)
            if cut is not None:
                end = cut.start()
            value = text[start:end].rstrip()
            if len(value) > 1 and value[0] in "\"'" and value.endswith(value[0]):
                start, end = start + 1, start + len(value) - 1
            else:
                end = start + _shaped_length(key_entity(m.group("k")), text[start:end])
            add(m.group("k"), start, end, 0.75 if line_start else 0.7, "key: value")
        for key, start, end in _table_cells(text):
            add(key, start, end, 0.8, "table column")

        return [RecognizerResult(
            entity_type=entity, start=a, end=b, score=score,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.recognizer_name,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                "rule": rule,
            }) for (a, b), (entity, score, rule) in spans.items()]


def _shaped_length(entity: str | None, value: str) -> int:
    """How much of an unquoted ``Key: value`` is the value (see _TOKENS)."""
    if entity in _FREE_TEXT:
        return len(value)
    if entity == "DATE_OF_BIRTH":
        from edgewise.privacy.recognizers.dates import DATE

        m = re.match(DATE, value)
        if m is not None:
            return m.end()
    m = _TOKENS.match(value)
    n = m.end() if m is not None else len(value)
    # "(MRN: 00457812)", "MRN: 00457812." — a closing bracket or full stop that is not
    # the value's own
    pairs = {")": "(", "]": "[", "}": "{"}
    while n > 1 and (value[n - 1] in ".:" or (
            value[n - 1] in pairs
            and value[:n].count(pairs[value[n - 1]]) < value[:n].count(value[n - 1]))):
        n -= 1
    return n


def _split_row(line: str, start: int, delimiter: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each cell of one row (quotes honoured, Markdown pipes
    trimmed), in text coordinates."""
    cells: list[tuple[int, int]] = []
    body = line
    offset = start
    if delimiter == "|":
        stripped = body.strip()
        lead = len(body) - len(body.lstrip())
        if stripped.startswith("|"):
            offset += lead + 1
            body = stripped[1:]
            if body.endswith("|"):
                body = body[:-1]
    pos, quoted, cell_start = 0, False, 0
    while pos <= len(body):
        ch = body[pos] if pos < len(body) else delimiter
        if ch == "\"":
            quoted = not quoted
        elif (ch == delimiter and not quoted) or pos == len(body):
            a, b = cell_start, pos
            while a < b and body[a] in " \t\"":
                a += 1
            while b > a and body[b - 1] in " \t\"\r":
                b -= 1
            cells.append((offset + a, offset + b))
            cell_start = pos + 1
        pos += 1
    return cells


def _table_cells(text: str) -> list[tuple[str, int, int]]:
    """(key, start, end) of every cell under a known header in a delimited table."""
    lines: list[tuple[int, str]] = []
    pos = 0
    for line in text.split("\n"):
        lines.append((pos, line))
        pos += len(line) + 1
    out: list[tuple[str, int, int]] = []
    i = 0
    while i < len(lines):
        start, line = lines[i]
        header = _header(line, start, text)
        if header is None:
            i += 1
            continue
        delimiter, keys = header
        j = i + 1
        while j < len(lines):
            row_start, row = lines[j]
            if not row.strip():
                break
            if delimiter == "|" and re.fullmatch(r"[\s|:\-]+", row):  # Markdown rule
                j += 1
                continue
            cells = _split_row(row, row_start, delimiter)
            if len(cells) != len(keys):
                break
            for key, (a, b) in zip(keys, cells, strict=True):
                if key is not None and a < b:
                    out.append((key, a, b))
            j += 1
        i = j
    return out


def _header(line: str, start: int, text: str) -> tuple[str, list[str | None]] | None:
    for delimiter in _ROW_DELIMITERS:
        if line.count(delimiter) < 1:
            continue
        cells = _split_row(line, start, delimiter)
        names = [text[a:b] for a, b in cells]
        if len(names) < 2 or not all(re.fullmatch(r"[A-Za-z][\w .\-'’/#]{0,40}", n)
                                     for n in names):
            continue
        keys = [n if key_entity(n) is not None else None for n in names]
        known = sum(k is not None for k in keys)
        # "Name, address and phone number are required" is a sentence, not a header
        if known >= 2 or (known == 1 and all(" " not in n.strip() for n in names)):
            return delimiter, keys
    return None
